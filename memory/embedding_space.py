"""The embedding space of the ``memories`` table: vector size, and which rows need new vectors.

Migration 0003 creates ``embedding`` as ``vector(384)`` (all-MiniLM-L6-v2,
the embedded default). A deployment that configures another embedder (a
768-d local model, OpenAI's 1536-d ``text-embedding-3-small``) *adopts* its
size at start (:meth:`EmbeddingSpace.adopt_dimensions`): on Postgres, under
an advisory lock so that replicas starting together change it once, the
HNSW index is dropped, the column becomes ``vector(n)`` with every vector
cleared (vectors of two models are never comparable) and the index is
rebuilt (pgvector indexes at most 2,000 dimensions; above that search scans
exactly). SQLite stores raw float32 bytes and needs no DDL.

Rows whose vector is missing or was made by another model than the
configured one are *stale*: vector search leaves them out (they are still
found by keywords) and the re-embed job (agents/reembed.py, ``salon memory
reembed``) gives them new vectors, a batch at a time, with a guard that never
writes a vector over text edited meanwhile (docs/memory.md, "Changing the
embedding model").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    and_,
    func,
    or_,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.exc import DBAPIError

from memory.memory_records import check_embedding, rowcount
from memory.models import EMBEDDING_DIMENSIONS, Memory
from memory.store import Store

log = structlog.get_logger(__name__)

# pgvector's HNSW indexes vectors of at most this many dimensions.
HNSW_MAX_DIMENSIONS = 2000
# Any constant works: it names "the memories embedding column" to pg_advisory_xact_lock.
_ADOPT_LOCK = 0x5A10_E3B0


@dataclass(frozen=True)
class StaleRow:
    """A memory item that needs a (new) vector."""

    id: str
    tenant_id: str
    text: str


class DimensionMismatch(ValueError):
    """Vectors of another size than the table stores (another replica changed it)."""


def is_dimension_mismatch(exc: BaseException) -> bool:
    """Did the database refuse a vector because the column has another size?"""
    return isinstance(exc, DBAPIError) and "expected" in str(exc) and "dimensions" in str(exc)


class EmbeddingSpace:
    """Mixin of :class:`memory.memories.MemoryStore`: the column's size and the stale rows."""

    store: Store
    dialect: str
    # The size vectors must have to be stored: the column's, once adopted.
    dimensions: int = EMBEDDING_DIMENSIONS

    async def stored_dimensions(self) -> int | None:
        """The ``vector(n)`` size of the column on Postgres; None on SQLite (any size fits)."""
        if self.dialect != "postgresql":
            return None
        async with self.store._tx() as s:
            mod = (
                await s.execute(
                    text(
                        "SELECT atttypmod FROM pg_attribute "
                        "WHERE attrelid = 'memories'::regclass AND attname = 'embedding'"
                    )
                )
            ).scalar_one()
        return int(mod) if mod and mod > 0 else None

    async def adopt_dimensions(self, dimensions: int) -> bool:
        """Make the table store ``dimensions``-d vectors; True if the column had to change.

        Changing clears every stored vector (the re-embed job makes new ones)
        and rebuilds the HNSW index; the table is locked meanwhile, which on
        an empty vector column takes milliseconds. Needs the table's owner
        (the role that ran the migrations) on Postgres.
        """
        if dimensions < 1:
            raise ValueError("dimensions must be at least 1")
        if self.dialect != "postgresql":
            self.dimensions = dimensions
            return False
        async with self.store._tx(system=True) as s:
            # Replicas starting together: one changes the column, the others see it done.
            await s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADOPT_LOCK})
            current = (
                await s.execute(
                    text(
                        "SELECT atttypmod FROM pg_attribute "
                        "WHERE attrelid = 'memories'::regclass AND attname = 'embedding'"
                    )
                )
            ).scalar_one()
            if current == dimensions:
                self.dimensions = dimensions
                return False
            await s.execute(text("DROP INDEX IF EXISTS ix_memories_embedding"))
            await s.execute(
                text(
                    f"ALTER TABLE memories ALTER COLUMN embedding TYPE vector({int(dimensions)}) "
                    "USING NULL"
                )
            )
            await s.execute(update(Memory).values(embedding_model=None))
            if dimensions <= HNSW_MAX_DIMENSIONS:
                await s.execute(
                    text(
                        "CREATE INDEX ix_memories_embedding ON memories "
                        "USING hnsw (embedding vector_cosine_ops)"
                    )
                )
        log.warning(
            "memory_embeddings_resized",
            old=current,
            new=dimensions,
            indexed=dimensions <= HNSW_MAX_DIMENSIONS,
            note="stored vectors were cleared; the re-embed job makes new ones",
        )
        self.dimensions = dimensions
        return True

    def _stale(self, model: str | None) -> ColumnElement[bool]:
        # A vector of another model (or of an unknown one, when a model is set) is
        # stale; on SQLite, which keeps any size, so is one of another size.
        conditions: list[ColumnElement[bool]] = [Memory.embedding.is_(None)]
        if model is not None:
            conditions += [Memory.embedding_model.is_(None), Memory.embedding_model != model]
        if self.dialect != "postgresql":
            size = func.length(type_coerce(Memory.embedding, LargeBinary))
            conditions.append(size != 4 * self.dimensions)
        return or_(*conditions)

    async def count_stale(self, model: str | None) -> int:
        """How many items (all tenants) have no vector of ``model``."""
        async with self.store._tx(system=True) as s:
            q = select(func.count()).select_from(Memory).where(self._stale(model))
            return int((await s.execute(q)).scalar_one())

    async def stale_batch(
        self, model: str | None, *, limit: int, after_id: str = ""
    ) -> list[StaleRow]:
        """The next ``limit`` stale items (all tenants) by id, after ``after_id``."""
        async with self.store._tx(system=True) as s:
            rows = (
                await s.execute(
                    select(Memory.id, Memory.tenant_id, Memory.text)
                    .where(self._stale(model), Memory.id > after_id)
                    .order_by(Memory.id)
                    .limit(limit)
                )
            ).all()
        return [StaleRow(r[0], r[1], r[2]) for r in rows]

    async def set_embeddings(
        self, rows: Sequence[StaleRow], vectors: Sequence[Sequence[float]], model: str | None
    ) -> int:
        """Store new vectors; a row whose text changed since it was read keeps its own.

        Returns how many rows were updated. The text guard matters because an
        edit (``PATCH /v1/memories``) clears or replaces the vector: a vector
        computed from the old text must not land on the new one.
        """
        checked = [check_embedding(v, self.dimensions) for v in vectors]
        updated = 0
        async with self.store._tx(system=True) as s:
            for row, vector in zip(rows, checked, strict=True):
                result = await s.execute(
                    update(Memory)
                    .where(and_(Memory.id == row.id, Memory.text == row.text))
                    .values(embedding=vector, embedding_model=model)
                )
                updated += rowcount(result)
        return updated
