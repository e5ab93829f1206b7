"""Long-term memory items: what a persona remembers about a user (docs/memory.md).

:class:`MemoryStore` is the storage side of the memory model: tenant-scoped
create/read/update/delete of memory items, atomic superseding of a fact that
changed, forgetting a user, and the two reads retrieval needs (the user's live
items, and their nearest neighbours by embedding). Records handed out are
frozen :class:`MemoryRecord` values, never ORM objects.

It works on the same database as :class:`memory.store.Store` and opens every
transaction through ``Store._tx(tenant_id)``, so on Postgres each one carries
the tenant setting that the row-level security policy of migration 0003
checks. Ranking lives in :mod:`memory.retrieval`.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import (
    Float,
    LargeBinary,
    Select,
    delete,
    insert,
    or_,
    select,
    text,
    type_coerce,
    update,
)

from memory.ids import new_id
from memory.models import EMBEDDING_DIMENSIONS, Memory, utcnow
from memory.store import Store

# A SELECT of any columns (SQLAlchemy 2.1's Select is variadic).
AnySelect = Select[*tuple[Any, ...]]

# turn: an episodic item (one dialog turn, as said); fact / preference / event:
# semantic items extracted from turns; summary: a rolling summary of older history.
KINDS = ("turn", "fact", "preference", "event", "summary")

# The columns of a record (everything but the embedding itself).
_RECORD_COLUMNS = (
    Memory.id,
    Memory.tenant_id,
    Memory.persona_id,
    Memory.user_id,
    Memory.kind,
    Memory.text,
    Memory.importance,
    Memory.pinned,
    Memory.source_message_ids,
    Memory.source_refs,
    Memory.valid_from,
    Memory.valid_to,
    Memory.superseded_by,
    Memory.embedding_model,
    (Memory.embedding.is_not(None)).label("has_embedding"),
    Memory.created_at,
    Memory.updated_at,
)


@dataclass(frozen=True)
class MemoryRecord:
    """One memory item, as stored. ``valid_to`` is set once it has been superseded."""

    id: str
    tenant_id: str
    persona_id: str
    user_id: str
    kind: str
    text: str
    importance: float
    pinned: bool
    source_message_ids: tuple[str, ...]
    source_refs: tuple[str, ...]
    valid_from: datetime
    valid_to: datetime | None
    superseded_by: str | None
    embedding_model: str | None
    has_embedding: bool
    created_at: datetime
    updated_at: datetime

    @property
    def live(self) -> bool:
        """Still valid: not superseded or retired."""
        return self.valid_to is None

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "persona_id": self.persona_id,
            "user_id": self.user_id,
            "kind": self.kind,
            "text": self.text,
            "importance": self.importance,
            "pinned": self.pinned,
            "source_message_ids": list(self.source_message_ids),
            "source_refs": list(self.source_refs),
            "valid_from": self.valid_from.isoformat(),
            "valid_to": self.valid_to.isoformat() if self.valid_to else None,
            "superseded_by": self.superseded_by,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class NewMemory:
    """A memory item to add (see :meth:`MemoryStore.add_many`)."""

    persona_id: str
    user_id: str
    text: str
    kind: str = "fact"
    importance: float = 0.5
    pinned: bool = False
    source_message_ids: Sequence[str] = ()
    source_refs: Sequence[str] = ()
    valid_from: datetime | None = None
    embedding: Sequence[float] | None = field(default=None, repr=False)
    embedding_model: str | None = None
    id: str | None = None


class MemoryStore:
    """Tenant-scoped access to the ``memories`` table.

    Every method takes ``tenant_id`` and filters by it; another tenant's item
    is indistinguishable from a missing one.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dialect = store.engine.dialect.name
        self._pgvector_iterative: bool | None = None

    # -- writes -----------------------------------------------------------------

    async def add(
        self,
        tenant_id: str,
        *,
        persona_id: str,
        user_id: str,
        text: str,
        kind: str = "fact",
        importance: float = 0.5,
        pinned: bool = False,
        source_message_ids: Sequence[str] = (),
        source_refs: Sequence[str] = (),
        valid_from: datetime | None = None,
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
        memory_id: str | None = None,
    ) -> MemoryRecord:
        """Add one memory item and return it."""
        item = NewMemory(
            persona_id=persona_id,
            user_id=user_id,
            text=text,
            kind=kind,
            importance=importance,
            pinned=pinned,
            source_message_ids=source_message_ids,
            source_refs=source_refs,
            valid_from=valid_from,
            embedding=embedding,
            embedding_model=embedding_model,
            id=memory_id,
        )
        return (await self.add_many(tenant_id, [item]))[0]

    async def add_many(self, tenant_id: str, items: Iterable[NewMemory]) -> list[MemoryRecord]:
        """Add many items in one transaction (one batched INSERT); records in input order.

        Items without ``valid_from`` get the current time plus one microsecond
        per position, so a batch of dialog turns keeps its order (retrieval
        relies on it to find neighbouring turns).
        """
        now = utcnow()
        rows = [
            _row(tenant_id, item, now, default_from=now + timedelta(microseconds=n))
            for n, item in enumerate(items)
        ]
        if not rows:
            return []
        async with self.store._tx(tenant_id) as s:
            await s.execute(insert(Memory), rows)
        return [_record_from_row(row) for row in rows]

    async def update(
        self,
        tenant_id: str,
        memory_id: str,
        *,
        text: str | None = None,
        importance: float | None = None,
        pinned: bool | None = None,
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
    ) -> MemoryRecord | None:
        """Edit an item in place; ``None`` when there is no such item in this tenant.

        A new ``text`` without a new ``embedding`` clears the stored embedding
        (it described the old text): the item stays findable by keywords until
        it is embedded again.
        """
        values: dict[str, Any] = {}
        if text is not None:
            values["text"] = _check_text(text)
            if embedding is None:
                values["embedding"] = None
                values["embedding_model"] = None
        if importance is not None:
            values["importance"] = _check_importance(importance)
        if pinned is not None:
            values["pinned"] = bool(pinned)
        if embedding is not None:
            values["embedding"] = _check_embedding(embedding)
            values["embedding_model"] = embedding_model
        async with self.store._tx(tenant_id) as s:
            if values:
                values["updated_at"] = utcnow()
                await s.execute(
                    update(Memory)
                    .where(Memory.tenant_id == tenant_id, Memory.id == memory_id)
                    .values(**values)
                )
            row = (
                await s.execute(_select_records(tenant_id).where(Memory.id == memory_id))
            ).one_or_none()
        return _record(row) if row else None

    async def delete(self, tenant_id: str, memory_id: str) -> bool:
        """Forget one item (its embedding goes with the row)."""
        async with self.store._tx(tenant_id) as s:
            result = await s.execute(
                delete(Memory).where(Memory.tenant_id == tenant_id, Memory.id == memory_id)
            )
        return bool(_rowcount(result))

    async def delete_for_user(self, tenant_id: str, user_id: str) -> int:
        """Forget every item about ``user_id`` (all personas); returns how many."""
        async with self.store._tx(tenant_id) as s:
            result = await s.execute(
                delete(Memory).where(Memory.tenant_id == tenant_id, Memory.user_id == user_id)
            )
        return _rowcount(result)

    async def supersede(
        self,
        tenant_id: str,
        old_id: str,
        *,
        text: str,
        kind: str | None = None,
        importance: float | None = None,
        pinned: bool | None = None,
        source_message_ids: Sequence[str] = (),
        source_refs: Sequence[str] = (),
        valid_from: datetime | None = None,
        embedding: Sequence[float] | None = None,
        embedding_model: str | None = None,
    ) -> MemoryRecord | None:
        """Replace a fact that changed, keeping history; ``None`` if ``old_id`` is unknown.

        In one transaction: the new item is inserted (same persona and user;
        kind, importance and pinning default to the old item's) and the old one
        gets ``valid_to`` (the new item's ``valid_from``) and ``superseded_by``.
        If the old item was already superseded (another writer got there
        first), the new item supersedes the current version instead, so
        concurrent updates form a chain and never leave two live versions.
        """
        now = utcnow()
        async with self.store._tx(tenant_id) as s:
            old = (
                await s.execute(_select_records(tenant_id).where(Memory.id == old_id))
            ).one_or_none()
            if old is None:
                return None
            row = _row(
                tenant_id,
                NewMemory(
                    persona_id=old.persona_id,
                    user_id=old.user_id,
                    text=text,
                    kind=kind or old.kind,
                    importance=old.importance if importance is None else importance,
                    pinned=old.pinned if pinned is None else pinned,
                    source_message_ids=source_message_ids,
                    source_refs=source_refs,
                    valid_from=valid_from,
                    embedding=embedding,
                    embedding_model=embedding_model,
                ),
                now,
            )
            await s.execute(insert(Memory), [row])
            target: str | None = old_id
            seen: set[str] = set()
            while target is not None and target not in seen:
                seen.add(target)
                # Conditional: only a live version is retired, so of two
                # concurrent writers exactly one retires it (the other follows
                # the chain to the version that writer created).
                result = await s.execute(
                    update(Memory)
                    .where(
                        Memory.tenant_id == tenant_id,
                        Memory.id == target,
                        Memory.valid_to.is_(None),
                    )
                    .values(valid_to=row["valid_from"], superseded_by=row["id"], updated_at=now)
                )
                if _rowcount(result):
                    break
                target = (
                    await s.execute(
                        select(Memory.superseded_by).where(
                            Memory.tenant_id == tenant_id, Memory.id == target
                        )
                    )
                ).scalar_one_or_none()
        return _record_from_row(row)

    # -- reads ------------------------------------------------------------------

    async def get(self, tenant_id: str, memory_id: str) -> MemoryRecord | None:
        async with self.store._tx(tenant_id) as s:
            row = (
                await s.execute(_select_records(tenant_id).where(Memory.id == memory_id))
            ).one_or_none()
        return _record(row) if row else None

    async def list(
        self,
        tenant_id: str,
        *,
        persona_id: str | None = None,
        user_id: str | None = None,
        kind: str | Sequence[str] | None = None,
        pinned: bool | None = None,
        include_superseded: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[MemoryRecord]:
        """Items matching the filters, newest first (``valid_from``, then id)."""
        q = _filtered(
            _select_records(tenant_id),
            persona_id=persona_id,
            user_id=user_id,
            kinds=kind,
            pinned=pinned,
            include_superseded=include_superseded,
        )
        q = q.order_by(Memory.valid_from.desc(), Memory.id.desc()).limit(limit).offset(offset)
        async with self.store._tx(tenant_id) as s:
            rows = (await s.execute(q)).all()
        return [_record(r) for r in rows]

    async def candidates(
        self,
        tenant_id: str,
        persona_id: str,
        user_id: str,
        *,
        kinds: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> builtins.list[MemoryRecord]:
        """The live items retrieval ranks: pinned first, then newest first, at most ``limit``."""
        q = _filtered(
            _select_records(tenant_id), persona_id=persona_id, user_id=user_id, kinds=kinds
        ).order_by(Memory.pinned.desc(), Memory.valid_from.desc(), Memory.id.desc())
        if limit is not None:
            q = q.limit(limit)
        async with self.store._tx(tenant_id) as s:
            rows = (await s.execute(q)).all()
        return [_record(r) for r in rows]

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
        starve the result, and iterative scans on pgvector >= 0.8. SQLite:
        always an exact scan of the user's vectors with numpy. Items embedded
        by another model than ``embedding_model`` are left out (their vectors
        are not comparable). Similarities are rounded to 6 decimals and ties
        go to the smaller id, so exact results agree across backends.
        """
        if limit <= 0:
            return []
        query = _check_embedding(vector)
        base = _filtered(
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
        return await self._nearest_exact(tenant_id, base, query, limit)

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
                await s.execute(
                    text("SELECT set_config('hnsw.ef_search', :ef, true)"),
                    {"ef": str(min(1000, max(40, limit)))},
                )
                if await self._iterative_scans(s):
                    await s.execute(
                        text("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
                    )
            rows = (await s.execute(q)).all()
        return _ordered((r[0], 1.0 - float(r[1])) for r in rows)[:limit]

    async def _iterative_scans(self, session: Any) -> bool:
        """Whether the installed pgvector has HNSW iterative scans (0.8.0 and later)."""
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
        return _ordered(zip((r[0] for r in rows), sims.tolist(), strict=True))[:limit]


# -- helpers --------------------------------------------------------------------


def _select_records(tenant_id: str) -> AnySelect:
    return select(*_RECORD_COLUMNS).where(Memory.tenant_id == tenant_id)


def _filtered(
    q: AnySelect,
    *,
    tenant_id: str | None = None,
    persona_id: str | None = None,
    user_id: str | None = None,
    kinds: str | Sequence[str] | None = None,
    pinned: bool | None = None,
    include_superseded: bool = False,
) -> AnySelect:
    if tenant_id is not None:
        q = q.where(Memory.tenant_id == tenant_id)
    if persona_id is not None:
        q = q.where(Memory.persona_id == persona_id)
    if user_id is not None:
        q = q.where(Memory.user_id == user_id)
    if kinds is not None:
        wanted = [kinds] if isinstance(kinds, str) else list(kinds)
        q = q.where(Memory.kind.in_(wanted))
    if pinned is not None:
        q = q.where(Memory.pinned.is_(pinned))
    if not include_superseded:
        q = q.where(Memory.valid_to.is_(None))
    return q


def _ordered(pairs: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    rounded = [(mid, round(sim, 6)) for mid, sim in pairs]
    rounded.sort(key=lambda p: (-p[1], p[0]))
    return rounded


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _utc(value: datetime | None, default: datetime) -> datetime:
    if value is None:
        return default
    # SQLite keeps no zone: store UTC everywhere so comparisons and ordering agree.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _check_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a memory needs a non-empty text")
    return text


def _check_importance(importance: float) -> float:
    value = float(importance)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"importance must be between 0 and 1, got {importance}")
    return value


def _check_embedding(embedding: Sequence[float]) -> list[float]:
    values = [float(v) for v in embedding]
    if len(values) != EMBEDDING_DIMENSIONS:
        raise ValueError(
            f"embedding has {len(values)} dimensions; memories store {EMBEDDING_DIMENSIONS} "
            "(another size needs a migration, see docs/memory.md)"
        )
    return values


def _row(
    tenant_id: str, item: NewMemory, now: datetime, *, default_from: datetime | None = None
) -> dict[str, Any]:
    if item.kind not in KINDS:
        raise ValueError(f"unknown memory kind {item.kind!r}; one of {', '.join(KINDS)}")
    embedding = _check_embedding(item.embedding) if item.embedding is not None else None
    return {
        "id": item.id or new_id("mem"),
        "tenant_id": tenant_id,
        "persona_id": item.persona_id,
        "user_id": item.user_id,
        "kind": item.kind,
        "text": _check_text(item.text),
        "importance": _check_importance(item.importance),
        "pinned": bool(item.pinned),
        "source_message_ids": [str(x) for x in item.source_message_ids],
        "source_refs": [str(x) for x in item.source_refs],
        "valid_from": _utc(item.valid_from, default_from or now),
        "valid_to": None,
        "superseded_by": None,
        "embedding": embedding,
        "embedding_model": item.embedding_model if embedding is not None else None,
        "created_at": now,
        "updated_at": now,
    }


def _record_from_row(row: dict[str, Any]) -> MemoryRecord:
    return MemoryRecord(
        id=row["id"],
        tenant_id=row["tenant_id"],
        persona_id=row["persona_id"],
        user_id=row["user_id"],
        kind=row["kind"],
        text=row["text"],
        importance=row["importance"],
        pinned=row["pinned"],
        source_message_ids=tuple(row["source_message_ids"]),
        source_refs=tuple(row["source_refs"]),
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        superseded_by=row["superseded_by"],
        embedding_model=row["embedding_model"],
        has_embedding=row["embedding"] is not None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _record(row: Any) -> MemoryRecord:
    return MemoryRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        persona_id=row.persona_id,
        user_id=row.user_id,
        kind=row.kind,
        text=row.text,
        importance=float(row.importance),
        pinned=bool(row.pinned),
        source_message_ids=tuple(row.source_message_ids or ()),
        source_refs=tuple(row.source_refs or ()),
        valid_from=_aware(row.valid_from),
        valid_to=_aware(row.valid_to) if row.valid_to else None,
        superseded_by=row.superseded_by,
        embedding_model=row.embedding_model,
        has_embedding=bool(row.has_embedding),
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
    )
