"""Partial HNSW indexes for the few people a persona has very many memories of (Postgres).

pgvector before 0.8 filters *after* an HNSW scan, so with one person's items
being a tiny share of a large table, the shared index cannot serve a filtered
top-k; Postgres scores every one of that person's vectors instead (exact, via
the owner index). That costs about 1 µs per item: fine for hundreds, ~20 ms
for a person with 10,000 (docs/benchmarks.md). pgvector's own advice for a
filter with few distinct values is a partial index, so a person past
``min_items`` live items gets one::

    CREATE INDEX CONCURRENTLY ix_memories_vec_<hash> ON memories
        USING hnsw (embedding vector_cosine_ops)
        WHERE tenant_id = '…' AND persona_id = '…' AND user_id = '…' AND valid_to IS NULL

Retrieval then asks for the approximate path for that person, and the planner
picks the small index (with ``plan_cache_mode = force_custom_plan`` in that
transaction, so a cached generic plan cannot hide the literal values the
index predicate needs). Builds run in the background, never in a request,
one at a time per cluster (an advisory lock), at most ``max_indexes`` in all:
every partial index costs each INSERT a predicate check and each query plan a
look, so they are for the heavy few, not for everyone. Forgetting a person
drops theirs. SQLite has no such thing (its search is always exact in numpy).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

PREFIX = "ix_memories_vec_"
REFRESH_SECONDS = 30.0  # how stale this process's view of the other replicas' builds may be
_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_BUILD_LOCK = 0x5A10_1D3C  # one build at a time per database (pg_try_advisory_lock)
_LIST = text(
    "SELECT c.relname, i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i "
    "JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE i.indrelid = 'memories'::regclass AND c.relname LIKE :prefix"
)


def index_name(tenant_id: str, persona_id: str, user_id: str) -> str:
    """The partial index of one (tenant, persona, user): a stable name under 63 bytes."""
    digest = hashlib.blake2b(
        "\x1f".join((tenant_id, persona_id, user_id)).encode(), digest_size=8
    ).hexdigest()
    return PREFIX + digest


class OwnerIndexes:
    """Which people have a partial vector index, and building or dropping them."""

    def __init__(
        self, engine: AsyncEngine, *, min_items: int = 5_000, max_indexes: int = 500
    ) -> None:
        self.engine = engine
        self.min_items = min_items
        self.max_indexes = max_indexes
        self._valid: set[str] = set()
        self._loaded_at = -REFRESH_SECONDS
        self._building: dict[str, asyncio.Task[bool]] = {}

    async def has(self, tenant_id: str, persona_id: str, user_id: str) -> bool:
        """Whether this person's index exists and is usable (as of the last refresh)."""
        if time.monotonic() - self._loaded_at >= REFRESH_SECONDS:
            await self.refresh()
        return index_name(tenant_id, persona_id, user_id) in self._valid

    async def refresh(self) -> None:
        """Re-read the valid owner indexes from the catalog (other replicas build them too)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_LIST, {"prefix": PREFIX + "%"})).all()
        self._valid = {r[0] for r in rows if r[1]}
        self._loaded_at = time.monotonic()

    def schedule(self, tenant_id: str, persona_id: str, user_id: str) -> None:
        """Build this person's index in the background (once; errors are logged, not raised)."""
        name = index_name(tenant_id, persona_id, user_id)
        if name in self._valid or name in self._building:
            return
        task = asyncio.create_task(self._build_logged(tenant_id, persona_id, user_id))
        self._building[name] = task
        task.add_done_callback(lambda _: self._building.pop(name, None))

    async def wait_built(self) -> None:
        """Wait for the builds this process started (tests, benchmarks)."""
        while self._building:
            await asyncio.gather(*list(self._building.values()), return_exceptions=True)

    async def _build_logged(self, tenant_id: str, persona_id: str, user_id: str) -> bool:
        try:
            return await self.build(tenant_id, persona_id, user_id)
        except Exception:
            log.exception("owner_index_build_failed", tenant_id=tenant_id, user_id=user_id)
            return False

    async def build(self, tenant_id: str, persona_id: str, user_id: str) -> bool:
        """Create the person's partial HNSW index now; True if this call built it.

        False when another process holds the build lock (it is building one),
        when the index already exists, or when ``max_indexes`` are in place.
        An index left invalid by an interrupted concurrent build is dropped and
        built again.
        """
        for value in (tenant_id, persona_id, user_id):
            if not _ID.match(value):  # they go into DDL as literals
                raise ValueError(f"not an id: {value!r}")
        name = index_name(tenant_id, persona_id, user_id)
        # CREATE INDEX CONCURRENTLY refuses to run inside a transaction block.
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if not (
                await conn.execute(text(f"SELECT pg_try_advisory_lock({_BUILD_LOCK})"))
            ).scalar():
                return False
            try:
                rows = (await conn.execute(_LIST, {"prefix": PREFIX + "%"})).all()
                existing = {r[0]: r[1] for r in rows}
                if existing.get(name):
                    self._valid.add(name)
                    return False
                if name in existing:  # invalid: an interrupted build
                    await conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                if sum(1 for valid in existing.values() if valid) >= self.max_indexes:
                    log.warning("owner_index_limit", limit=self.max_indexes, user_id=user_id)
                    return False
                started = time.perf_counter()
                await conn.execute(
                    text(
                        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON memories "
                        "USING hnsw (embedding vector_cosine_ops) "
                        f"WHERE tenant_id = '{tenant_id}' AND persona_id = '{persona_id}' "
                        f"AND user_id = '{user_id}' AND valid_to IS NULL"
                    )
                )
            finally:
                await conn.execute(text(f"SELECT pg_advisory_unlock({_BUILD_LOCK})"))
        self._valid.add(name)
        log.info(
            "owner_index_built",
            index=name,
            tenant_id=tenant_id,
            user_id=user_id,
            seconds=round(time.perf_counter() - started, 2),
        )
        return True

    async def drop_for_user(self, tenant_id: str, user_id: str) -> int:
        """Drop every partial index of this person (all personas); how many were dropped."""
        if not _ID.match(tenant_id) or not _ID.match(user_id):
            return 0
        mine = (f"tenant_id)::text = '{tenant_id}'", f"user_id)::text = '{user_id}'")
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            rows = (await conn.execute(_LIST, {"prefix": PREFIX + "%"})).all()
            names = [r[0] for r in rows if all(part in r[2] for part in mine)]
            for name in names:
                await conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
        self._valid.difference_update(names)
        return len(names)
