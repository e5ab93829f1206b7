"""The per-message operations on Postgres with asyncpg itself (see memory/direct.py).

Each operation is ONE statement, in one round trip: a function of migration
0013 that sets the tenant for its own transaction and runs the statement
(row-level security applies as everywhere, the setting is transaction-local).
Through the engine's pool the same work was a ping on checkout, BEGIN, the
settings, the statement and COMMIT, each an await on a busy event loop.

The connections come from a small asyncpg pool of this class's own, as large
as the engine's pool: no ping on checkout (asyncpg drops connections the
server closed) and nothing to reset on release (these connections never
change session state).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from memory.direct import (
    MESSAGE_COLUMNS,
    SUMMARY_CANDIDATES,
    DirectMessages,
    DuplicateMessage,
    source_ref_pattern,
)
from memory.memory_records import MemoryRecord, record_from_result
from memory.models import utcnow
from memory.records import MessageRecord

T = TypeVar("T")

# Arguments in the order of MESSAGE_COLUMNS.
_INSERT = "SELECT salon_insert_message($1, $2, $3, $4, $5, $6, $7, $8, $9)"
_RECENT = (
    "SELECT id, tenant_id, conversation_id, role, content, client_id, status, response_id,"
    " created_at FROM salon_recent_messages($1, $2, $3)"
)
_SUMMARY = (
    "SELECT id, tenant_id, persona_id, user_id, kind, text, importance, pinned,"
    " source_message_ids, source_refs, valid_from, valid_to, superseded_by, embedding_model,"
    " embedding IS NOT NULL AS has_embedding, created_at, updated_at, supersede_key"
    " FROM salon_live_summaries($1, $2, $3, $4, $5)"
)
_RAISE_SEQ = "SELECT salon_raise_last_seq($1, $2, $3, $4)"


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Nothing to reset on release: these connections never change session state."""


class PostgresDirect(DirectMessages):
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Task[asyncpg.Pool] | None = None

    async def _connections(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        if self._opening is None:  # one pool, however many callers arrive first
            self._opening = asyncio.create_task(self._open())
        opening = self._opening
        try:
            return await asyncio.shield(opening)
        except BaseException:
            if opening.done() and self._opening is opening:
                self._opening = None  # failed: the next call tries again
            raise

    async def _open(self) -> asyncpg.Pool:
        _, params = self.engine.dialect.create_connect_args(self.engine.url)
        size = self.engine.sync_engine.pool.size()  # type: ignore[attr-defined]
        self._pool = await asyncpg.create_pool(
            **params,
            min_size=0,
            max_size=size,
            reset=_keep_session,
            server_settings={"application_name": "salon"},
        )
        return self._pool

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        pool = await self._connections()
        async with pool.acquire() as connection:
            return await fn(connection)

    async def insert_message(self, values: dict[str, Any]) -> None:
        row = [values[name] for name in MESSAGE_COLUMNS]
        try:
            await self._run(lambda db: db.execute(_INSERT, *row))
        except asyncpg.UniqueViolationError as exc:
            if values.get("client_id") is None:
                raise
            raise DuplicateMessage(values["client_id"]) from exc

    async def recent_messages(
        self, tenant_id: str, conversation_id: str, limit: int
    ) -> list[MessageRecord]:
        rows = await self._run(lambda db: db.fetch(_RECENT, tenant_id, conversation_id, limit))
        return [MessageRecord(**dict(row)) for row in reversed(rows)]

    async def live_summary(
        self, tenant_id: str, persona_id: str, user_id: str, source_ref: str
    ) -> MemoryRecord | None:
        pattern = source_ref_pattern(source_ref)
        rows = await self._run(
            lambda db: db.fetch(
                _SUMMARY, tenant_id, persona_id, user_id, pattern, SUMMARY_CANDIDATES
            ),
        )
        for row in rows:
            values = dict(row)
            for name in ("source_refs", "source_message_ids"):  # json columns arrive as text
                if isinstance(values[name], str):
                    values[name] = json.loads(values[name])
            record = record_from_result(SimpleNamespace(**values))
            if source_ref in record.source_refs:
                return record
        return None

    async def raise_last_seq(self, tenant_id: str, conversation_id: str, seq: int) -> None:
        await self._run(
            lambda db: db.execute(_RAISE_SEQ, tenant_id, conversation_id, seq, utcnow()),
        )

    async def close(self) -> None:
        pool, self._pool, self._opening = self._pool, None, None
        if pool is not None:
            await pool.close()
