"""Nearest memory items by embedding: pgvector on Postgres, numpy on SQLite.

:class:`VectorSearch` is the read half of :class:`memory.memories.MemoryStore`
that retrieval's vector ranking uses (docs/memory.md, "Backends"). The
choice between an exact scan of the user's vectors and the HNSW index was
measured at 1M memories (benchmarks/memory_scale.py, docs/benchmarks.md).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Float, LargeBinary, func, or_, select, text, type_coerce

from memory.memory_records import AnySelect, check_embedding, filtered, ordered
from memory.models import Memory
from memory.store import Store


class VectorSearch:
    """``nearest``: the user's live items closest to a query vector."""

    store: Store
    dialect: str
    dimensions: int
    # pgvector's hnsw.ef_search for the approximate path; None = max(40, limit).
    hnsw_ef_search: int | None = None
    _pgvector_iterative: bool | None = None

    async def nearest(
        self,
        tenant_id: str,
        persona_id: str,
        user_id: str,
        vector: Sequence[float],
        *,
        limit: int,
        kinds: Sequence[str] | None = None,
        embedding_model: str | None = None,
        exact: bool = False,
    ) -> builtins.list[tuple[str, float]]:
        """``(id, cosine similarity)`` of the user's live items nearest to ``vector``, best first.

        Postgres: pgvector's ``<=>``. With ``exact`` (retrieval asks for it
        when the user has few enough items) every candidate's distance is
        computed, found through the owner index; otherwise ``ORDER BY <=>
        LIMIT`` lets the planner use the HNSW index (approximate), with
        ``hnsw.ef_search`` raised to ``limit`` so the owner filter does not
        starve the result, and iterative scans on pgvector >= 0.8 (retrieval
        asks for this path only then: older HNSW filters after the scan). At
        1M memories the planner chose the owner index for every user anyway
        (docs/benchmarks.md). SQLite:
        always an exact scan of the user's vectors with numpy. Items embedded
        by another model than ``embedding_model`` are left out (their vectors
        are not comparable). Similarities are rounded to 6 decimals and ties
        go to the smaller id, so exact results agree across backends.
        """
        if limit <= 0:
            return []
        query = check_embedding(vector, self.dimensions)
        base = filtered(
            select(Memory.id),
            tenant_id=tenant_id,
            persona_id=persona_id,
            user_id=user_id,
            kinds=kinds,
        ).where(Memory.embedding.is_not(None))
        if embedding_model is not None:
            base = base.where(
                or_(Memory.embedding_model.is_(None), Memory.embedding_model == embedding_model)
            )
        if self.dialect == "postgresql":
            return await self._nearest_pgvector(tenant_id, base, query, limit, exact)
        # SQLite keeps any size of vector: those of another size (made before a
        # change of embedder, not yet re-embedded) are left out.
        base = base.where(
            func.length(type_coerce(Memory.embedding, LargeBinary)) == 4 * self.dimensions
        )
        return await self._nearest_exact(tenant_id, base, query, limit)

    async def iterative_scans(self) -> bool:
        """Whether the database's pgvector has HNSW iterative scans (0.8.0 and later)."""
        if self.dialect != "postgresql":
            return False
        async with self.store._tx() as s:
            return await self._iterative_scans(s)

    async def _nearest_pgvector(
        self,
        tenant_id: str,
        base: AnySelect,
        query: builtins.list[float],
        limit: int,
        exact: bool,
    ) -> builtins.list[tuple[str, float]]:
        distance = Memory.embedding.op("<=>", return_type=Float)(
            type_coerce(query, Memory.embedding.type)
        )
        scored = base.add_columns(distance.label("distance"))
        if exact:
            # A materialized CTE cannot be read in HNSW order: every candidate
            # is scored (found by the owner index), then sorted.
            near = scored.cte("near").prefix_with("MATERIALIZED")
            q = select(near.c.id, near.c.distance).order_by(near.c.distance, near.c.id)
        else:
            q = scored.order_by(distance)
        q = q.limit(limit)
        async with self.store._tx(tenant_id) as s:
            if not exact:
                # HNSW yields at most ef_search rows before the owner filter applies.
                ef = self.hnsw_ef_search or max(40, limit)
                await s.execute(
                    text("SELECT set_config('hnsw.ef_search', :ef, true)"),
                    {"ef": str(min(1000, ef))},
                )
                if await self._iterative_scans(s):
                    await s.execute(
                        text("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
                    )
            rows = (await s.execute(q)).all()
        return ordered((r[0], 1.0 - float(r[1])) for r in rows)[:limit]

    async def _iterative_scans(self, session: Any) -> bool:
        if self._pgvector_iterative is None:
            version = (
                await session.execute(
                    text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                )
            ).scalar_one_or_none() or "0"
            parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
            self._pgvector_iterative = parts >= (0, 8)
        return self._pgvector_iterative

    async def _nearest_exact(
        self, tenant_id: str, base: AnySelect, query: builtins.list[float], limit: int
    ) -> builtins.list[tuple[str, float]]:
        # The raw bytes, not the decoded lists: one numpy buffer for the scan.
        q = base.add_columns(type_coerce(Memory.embedding, LargeBinary))
        async with self.store._tx(tenant_id) as s:
            rows = (await s.execute(q)).all()
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
        qv = np.asarray(query, dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(qv))
        sims = (matrix @ qv) / np.where(norms > 0, norms, 1.0)
        return ordered(zip((r[0] for r in rows), sims.tolist(), strict=True))[:limit]
