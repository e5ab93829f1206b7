"""The per-message operations on Postgres with asyncpg itself (see memory/direct.py).

A connection comes from the engine's pool (so its size, the ping on checkout
and disposal still apply); the transaction, the row-security settings and
the statement then go straight to asyncpg: BEGIN, the settings, the
statement and COMMIT, without SQLAlchemy's greenlet switch, statement
compilation and result processing around each. The tenant is set for the
transaction exactly as memory/store.py does, so row-level security applies.
"""

from __future__ import annotations

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

_SET_TENANT = "SELECT set_config('salon.tenant_id', $1, true), set_config('salon.scope', '', true)"
_INSERT = (
    "INSERT INTO messages (id, tenant_id, conversation_id, role, content, client_id, status,"
    " response_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)
_RECENT = (
    "SELECT id, tenant_id, conversation_id, role, content, client_id, status, response_id,"
    " created_at FROM messages WHERE tenant_id = $1 AND conversation_id = $2"
    " ORDER BY created_at DESC, id DESC LIMIT $3"
)
_SUMMARY = (
    "SELECT id, tenant_id, persona_id, user_id, kind, text, importance, pinned,"
    " source_message_ids, source_refs, valid_from, valid_to, superseded_by, embedding_model,"
    " embedding IS NOT NULL AS has_embedding, created_at, updated_at, supersede_key"
    " FROM memories WHERE tenant_id = $1 AND persona_id = $2 AND user_id = $3"
    " AND kind = 'summary' AND valid_to IS NULL AND source_refs::text LIKE $4 ESCAPE '/'"
    " ORDER BY valid_from DESC, id DESC LIMIT $5"
)
_RAISE_SEQ = (
    "UPDATE conversations SET last_seq = $3, updated_at = $4"
    " WHERE tenant_id = $1 AND id = $2 AND last_seq < $3"
)


class PostgresDirect(DirectMessages):
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def _run(self, tenant_id: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: asyncpg.Connection = raw.driver_connection
            async with driver.transaction():
                await driver.execute(_SET_TENANT, tenant_id)
                return await fn(driver)

    async def insert_message(self, values: dict[str, Any]) -> None:
        row = [values[name] for name in MESSAGE_COLUMNS]
        try:
            await self._run(values["tenant_id"], lambda db: db.execute(_INSERT, *row))
        except asyncpg.UniqueViolationError as exc:
            if values.get("client_id") is None:
                raise
            raise DuplicateMessage(values["client_id"]) from exc

    async def recent_messages(
        self, tenant_id: str, conversation_id: str, limit: int
    ) -> list[MessageRecord]:
        rows = await self._run(
            tenant_id, lambda db: db.fetch(_RECENT, tenant_id, conversation_id, limit)
        )
        return [MessageRecord(**dict(row)) for row in reversed(rows)]

    async def live_summary(
        self, tenant_id: str, persona_id: str, user_id: str, source_ref: str
    ) -> MemoryRecord | None:
        pattern = source_ref_pattern(source_ref)
        rows = await self._run(
            tenant_id,
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
            tenant_id,
            lambda db: db.execute(_RAISE_SEQ, tenant_id, conversation_id, seq, utcnow()),
        )

    async def close(self) -> None:
        """Nothing of its own: the connections belong to the engine's pool."""
