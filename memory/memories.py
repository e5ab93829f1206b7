"""Long-term memory items: what a persona remembers about a user (docs/memory.md).

:class:`MemoryStore` is the storage side of the memory model: tenant-scoped
create/read/update/delete of memory items, atomic superseding of a fact that
changed, forgetting a user, and the two reads retrieval needs (the user's live
items, and their nearest neighbours by embedding, :mod:`memory.vector_search`).
Records handed out are frozen :class:`MemoryRecord` values, never ORM objects.

It works on the same database as :class:`memory.store.Store` and opens every
transaction through ``Store._tx(tenant_id)``, so on Postgres each one carries
the tenant setting that the row-level security policy of migration 0003
checks. Ranking lives in :mod:`memory.retrieval`.

Concurrency: several replicas may write memories of one user at once. A fact
with a supersede key (a ``key:<k>`` source reference) has at most one live
version, enforced by the unique partial index of migration 0004; a writer that
loses the race to it retries as a supersede, so callers never see the conflict.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Text, cast, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from memory.direct import source_ref_pattern
from memory.embedding_space import EmbeddingSpace, is_dimension_mismatch
from memory.memory_records import (
    KEY_PREFIX,
    KINDS,
    MemoryRecord,
    NewMemory,
    check_embedding,
    check_importance,
    check_text,
    filtered,
    new_row,
    record_from_result,
    record_from_row,
    rowcount,
    select_records,
)
from memory.models import EMBEDDING_DIMENSIONS, Memory, utcnow
from memory.owner_indexes import OwnerIndexes
from memory.store import Store
from memory.vector_search import VectorSearch

__all__ = ["KEY_PREFIX", "KINDS", "MemoryRecord", "MemoryStore", "NewMemory"]

# A keyed write loses a race at most once per concurrent writer of that key;
# a few attempts cover any realistic number of replicas.
log = structlog.get_logger(__name__)

WRITE_ATTEMPTS = 8
# Postgres: deadlock detected, serialization failure. Two batches that retire
# the same keys in another order can deadlock; Postgres aborts one, we retry it.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})


class MemoryStore(VectorSearch, EmbeddingSpace):
    """Tenant-scoped access to the ``memories`` table.

    Every method takes ``tenant_id`` and filters by it; another tenant's item
    is indistinguishable from a missing one.
    """

    def __init__(
        self, store: Store, *, owner_indexes: bool = True, owner_index_max: int = 500
    ) -> None:
        self.store = store
        self.dialect = store.engine.dialect.name
        self.dimensions = EMBEDDING_DIMENSIONS  # until adopt_dimensions() says otherwise
        self._pgvector_iterative: bool | None = None
        # Postgres: partial HNSW indexes for people with very many memories.
        self.owner_indexes = (
            OwnerIndexes(store.engine, max_indexes=owner_index_max)
            if owner_indexes and self.dialect == "postgresql"
            else None
        )

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
        relies on it to find neighbouring turns). An item with a supersede key
        (a ``key:<k>`` source reference) supersedes the live item of this
        persona and user with that key, if there is one (and a later item of
        the same batch supersedes an earlier one): a fact has one live version.
        """
        now = utcnow()
        rows = [
            new_row(
                tenant_id,
                item,
                now,
                default_from=now + timedelta(microseconds=n),
                dimensions=self.dimensions,
            )
            for n, item in enumerate(items)
        ]
        if not rows:
            return []
        keyed = [row for row in rows if row["supersede_key"] is not None]
        for attempt in range(WRITE_ATTEMPTS):
            try:
                async with self.store._tx(tenant_id) as s:
                    if not keyed:
                        await s.execute(insert(Memory), rows)
                        break
                    await self._lock_keys(s, tenant_id, keyed)
                    retired = _retire_within_batch(keyed)
                    # Sorted: concurrent batches lock the same keys in one order.
                    for row in sorted(keyed, key=lambda r: r["supersede_key"]):
                        if row["valid_to"] is None:
                            old = await self._retire_live_key(s, tenant_id, row, now)
                            retired.extend((old_id, row["id"]) for old_id in old)
                    await s.execute(insert(Memory), rows)
                    await _link_successors(s, tenant_id, retired)
                break
            except DBAPIError as exc:
                if is_dimension_mismatch(exc) and any(r["embedding"] is not None for r in rows):
                    # Another replica adopted another embedder's size (a rolling
                    # change of model): keep the memories without vectors; the
                    # re-embed job gives them new ones.
                    log.warning("memories_stored_without_vectors", reason=str(exc.orig))
                    for row in rows:
                        row["embedding"] = row["embedding_model"] = None
                    continue
                # Another writer made a live item with one of these keys between
                # our retire and our insert; the next attempt retires it.
                if not keyed or not _retryable(exc) or attempt == WRITE_ATTEMPTS - 1:
                    raise
                for row in keyed:
                    row["valid_to"] = row["superseded_by"] = None
        return [record_from_row(row) for row in rows]

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
            values["text"] = check_text(text)
            if embedding is None:
                values["embedding"] = None
                values["embedding_model"] = None
        if importance is not None:
            values["importance"] = check_importance(importance)
        if pinned is not None:
            values["pinned"] = bool(pinned)
        if embedding is not None:
            values["embedding"] = check_embedding(embedding, self.dimensions)
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
                await s.execute(select_records(tenant_id).where(Memory.id == memory_id))
            ).one_or_none()
        return record_from_result(row) if row else None

    async def delete(self, tenant_id: str, memory_id: str) -> bool:
        """Forget one item (its embedding goes with the row)."""
        async with self.store._tx(tenant_id) as s:
            result = await s.execute(
                delete(Memory).where(Memory.tenant_id == tenant_id, Memory.id == memory_id)
            )
        return bool(rowcount(result))

    async def delete_for_user(self, tenant_id: str, user_id: str) -> int:
        """Forget every item about ``user_id`` (all personas); returns how many."""
        async with self.store._tx(tenant_id) as s:
            result = await s.execute(
                delete(Memory).where(Memory.tenant_id == tenant_id, Memory.user_id == user_id)
            )
        if self.owner_indexes is not None:
            await self.owner_indexes.drop_for_user(tenant_id, user_id)
        return rowcount(result)

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
        for attempt in range(WRITE_ATTEMPTS):
            try:
                async with self.store._tx(tenant_id) as s:
                    old = (
                        await s.execute(select_records(tenant_id).where(Memory.id == old_id))
                    ).one_or_none()
                    if old is None:
                        return None
                    item = NewMemory(
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
                    )
                    # The new version states the same fact unless it names another.
                    row = new_row(
                        tenant_id,
                        item,
                        now,
                        key=item.key or old.supersede_key,
                        dimensions=self.dimensions,
                    )
                    if row["supersede_key"] is not None:
                        await self._lock_keys(s, tenant_id, [row])
                    retired = await self._retire_chain(s, tenant_id, old_id, row, now)
                    if row["supersede_key"] is not None:
                        # A live item with the key that is not in this chain (a
                        # concurrent add of the same fact) is retired too.
                        retired += await self._retire_live_key(s, tenant_id, row, now)
                    await s.execute(insert(Memory), [row])
                    await _link_successors(s, tenant_id, [(r, row["id"]) for r in retired])
                return record_from_row(row)
            except DBAPIError as exc:
                if not _retryable(exc) or attempt == WRITE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _lock_keys(
        self, s: AsyncSession, tenant_id: str, rows: Sequence[dict[str, Any]]
    ) -> None:
        """Postgres: serialize writers of the same facts (transaction-scoped advisory locks).

        Without it, concurrent writers of one key all find no live version,
        all insert, and all but one fail on the unique index and retry: with
        many replicas that can take many rounds. Locks are taken in sorted
        order, so two batches cannot deadlock on them. SQLite needs none: its
        first write takes the database's single write lock.
        """
        if self.dialect != "postgresql":
            return
        locks = sorted(
            {_lock_id(tenant_id, r["persona_id"], r["user_id"], r["supersede_key"]) for r in rows}
        )
        for lock in locks:
            await s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock})

    async def _retire_chain(
        self, s: AsyncSession, tenant_id: str, old_id: str, row: dict[str, Any], now: datetime
    ) -> builtins.list[str]:
        """Retire the live version of ``old_id``'s chain; its id, or none if none is live.

        Conditional (``WHERE valid_to IS NULL``): of two concurrent writers
        exactly one retires a version (Postgres makes the other wait on the row
        lock, then re-check), and the other follows ``superseded_by`` to the
        version that writer created. ``superseded_by`` is filled in after the
        new row exists (:func:`_link_successors`): it is a foreign key.
        """
        target: str | None = old_id
        seen: set[str] = set()
        while target is not None and target not in seen:
            seen.add(target)
            result = await s.execute(
                update(Memory)
                .where(
                    Memory.tenant_id == tenant_id,
                    Memory.id == target,
                    Memory.valid_to.is_(None),
                )
                .values(valid_to=row["valid_from"], updated_at=now)
            )
            if rowcount(result):
                return [target]
            target = (
                await s.execute(
                    select(Memory.superseded_by).where(
                        Memory.tenant_id == tenant_id, Memory.id == target
                    )
                )
            ).scalar_one_or_none()
        return []

    async def _retire_live_key(
        self, s: AsyncSession, tenant_id: str, row: dict[str, Any], now: datetime
    ) -> builtins.list[str]:
        """Retire the live items of ``row``'s owner with ``row``'s supersede key; their ids."""
        result = await s.execute(
            update(Memory)
            .where(
                Memory.tenant_id == tenant_id,
                Memory.persona_id == row["persona_id"],
                Memory.user_id == row["user_id"],
                Memory.supersede_key == row["supersede_key"],
                Memory.valid_to.is_(None),
                Memory.id != row["id"],
            )
            .values(valid_to=row["valid_from"], updated_at=now)
            .returning(Memory.id)
        )
        return [r[0] for r in result.all()]

    # -- reads ------------------------------------------------------------------

    async def get(self, tenant_id: str, memory_id: str) -> MemoryRecord | None:
        async with self.store._tx(tenant_id) as s:
            row = (
                await s.execute(select_records(tenant_id).where(Memory.id == memory_id))
            ).one_or_none()
        return record_from_result(row) if row else None

    async def list(
        self,
        tenant_id: str,
        *,
        persona_id: str | None = None,
        user_id: str | None = None,
        kind: str | Sequence[str] | None = None,
        pinned: bool | None = None,
        include_superseded: bool = False,
        source_ref: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[MemoryRecord]:
        """Items matching the filters, newest first (``valid_from``, then id).

        ``source_ref``: only items whose ``source_refs`` hold exactly this string.
        """
        q = filtered(
            select_records(tenant_id),
            persona_id=persona_id,
            user_id=user_id,
            kinds=kind,
            pinned=pinned,
            include_superseded=include_superseded,
        )
        if source_ref is not None:
            # The LIKE narrows in SQL; the exact test below picks.
            pattern = source_ref_pattern(source_ref)
            q = q.where(cast(Memory.source_refs, Text).like(pattern, escape="/"))
        q = q.order_by(Memory.valid_from.desc(), Memory.id.desc()).limit(limit).offset(offset)
        async with self.store._tx(tenant_id) as s:
            rows = (await s.execute(q)).all()
        records = [record_from_result(r) for r in rows]
        if source_ref is not None:
            records = [r for r in records if source_ref in r.source_refs]
        return records

    async def live_summary(
        self, tenant_id: str, persona_id: str, user_id: str, source_ref: str
    ) -> MemoryRecord | None:
        """The newest live ``summary`` item of the persona and user with ``source_ref``.

        Read before every reply (agents/summaries.py), so on the store's direct
        path where the database has one (memory/direct.py).
        """
        direct = self.store.direct
        if direct is not None:
            return await direct.live_summary(tenant_id, persona_id, user_id, source_ref)
        found = await self.list(
            tenant_id,
            persona_id=persona_id,
            user_id=user_id,
            kind="summary",
            source_ref=source_ref,
            limit=1,
        )
        return found[0] if found else None

    async def pages_for_user(
        self, tenant_id: str, user_id: str, *, page: int = 500
    ) -> AsyncIterator[builtins.list[MemoryRecord]]:
        """Every item about ``user_id`` (all personas, superseded too), newest first, paged.

        The order of :meth:`list`; keyset paging on (``valid_from``, id), one
        short transaction per page (what the data export streams).
        """
        before: tuple[datetime, str] | None = None
        while True:
            q = select_records(tenant_id).where(Memory.user_id == user_id)
            if before is not None:
                q = q.where(
                    (Memory.valid_from < before[0])
                    | ((Memory.valid_from == before[0]) & (Memory.id < before[1]))
                )
            q = q.order_by(Memory.valid_from.desc(), Memory.id.desc()).limit(page)
            async with self.store._tx(tenant_id) as s:
                rows = (await s.execute(q)).all()
            if rows:
                yield [record_from_result(r) for r in rows]
                before = (rows[-1].valid_from, rows[-1].id)
            if len(rows) < page:
                return

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
        q = filtered(
            select_records(tenant_id), persona_id=persona_id, user_id=user_id, kinds=kinds
        ).order_by(Memory.pinned.desc(), Memory.valid_from.desc(), Memory.id.desc())
        if limit is not None:
            q = q.limit(limit)
        async with self.store._tx(tenant_id) as s:
            rows = (await s.execute(q)).all()
        return [record_from_result(r) for r in rows]


def _lock_id(*parts: str) -> int:
    """A stable signed 64-bit advisory lock id for one fact of one owner."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _retryable(exc: DBAPIError) -> bool:
    """A conflict with a concurrent writer that a fresh attempt resolves."""
    if isinstance(exc, IntegrityError):
        return True
    code = getattr(exc.orig, "pgcode", None) or getattr(exc.orig, "sqlstate", None)
    return code in _RETRY_SQLSTATES


def _retire_within_batch(keyed: builtins.list[dict[str, Any]]) -> builtins.list[tuple[str, str]]:
    """Within one batch, a later item with the same owner and key supersedes an earlier one.

    The earlier rows are inserted already retired (``valid_to`` set); returns
    ``(old id, new id)`` pairs for :func:`_link_successors`.
    """
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    pairs: builtins.list[tuple[str, str]] = []
    for row in reversed(keyed):
        owner = (row["persona_id"], row["user_id"], row["supersede_key"])
        if (newer := latest.get(owner)) is not None:
            row["valid_to"] = newer["valid_from"]
            pairs.append((row["id"], newer["id"]))
        latest[owner] = row
    return pairs


async def _link_successors(
    s: AsyncSession, tenant_id: str, pairs: Sequence[tuple[str, str]]
) -> None:
    """Point retired items at the version that replaced them (once that row exists)."""
    for old_id, new_id in pairs:
        await s.execute(
            update(Memory)
            .where(Memory.tenant_id == tenant_id, Memory.id == old_id)
            .values(superseded_by=new_id)
        )
