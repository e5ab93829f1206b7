"""The per-message operations on Postgres with asyncpg itself (see memory/direct.py).

A connection comes from the engine's pool (so its size, the ping on checkout
and disposal still apply); the transaction, the row-security settings and
the statement then go straight to asyncpg: BEGIN, the settings, the
statement and COMMIT, without SQLAlchemy's greenlet switch, statement
compilation and result processing around each. The tenant is set for the
transaction exactly as memory/store.py does, so row-level security applies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from memory.direct import MESSAGE_COLUMNS, DirectMessages, DuplicateMessage
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

    async def raise_last_seq(self, tenant_id: str, conversation_id: str, seq: int) -> None:
        await self._run(
            tenant_id,
            lambda db: db.execute(_RAISE_SEQ, tenant_id, conversation_id, seq, utcnow()),
        )

    async def close(self) -> None:
        """Nothing of its own: the connections belong to the engine's pool."""
