"""The per-message database operations, on each backend's fastest path.

Every user message and every reply costs these transactions: store the
message, read the recent history and the conversation's rolling summary
(before the reply's first token), and raise the conversation's last seq.
Through SQLAlchemy's async ORM each took 0.7-3 ms of a serving event loop (aiosqlite's per-call thread round trips;
on Postgres a pool ping, BEGIN, the row-security settings, the statement and
COMMIT, each a greenlet switch and an await). One implementation per backend
does just these with the driver's own fast path: memory/sqlite_direct.py
and memory/pg_direct.py. Everything else goes through memory/store.py's
SQLAlchemy sessions, and the store contract suite runs both.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from memory.memory_records import MemoryRecord
from memory.records import MessageRecord

# The columns of ``messages``, in the order the direct paths write and read them.
MESSAGE_COLUMNS = (
    "id",
    "tenant_id",
    "conversation_id",
    "role",
    "content",
    "client_id",
    "status",
    "response_id",
    "created_at",
)

# Rows read for a summary by its ref: the LIKE only narrows, the exact test picks.
SUMMARY_CANDIDATES = 5


class DuplicateMessage(Exception):
    """The conversation already has a message with this client id."""


class DirectMessages(ABC):
    """Store a message, read the recent ones and the summary, raise the last seq.

    One transaction each.
    """

    @abstractmethod
    async def insert_message(self, values: dict[str, Any]) -> None:
        """Insert a ``messages`` row (every column of ``MESSAGE_COLUMNS``).

        Raises :class:`DuplicateMessage` when its client id is taken.
        """

    @abstractmethod
    async def recent_messages(
        self, tenant_id: str, conversation_id: str, limit: int
    ) -> list[MessageRecord]:
        """The newest ``limit`` messages of the conversation, oldest first."""

    @abstractmethod
    async def live_summary(
        self, tenant_id: str, persona_id: str, user_id: str, source_ref: str
    ) -> MemoryRecord | None:
        """The newest live ``summary`` memory of the persona and user whose
        ``source_refs`` hold ``source_ref`` exactly (agents/summaries.py)."""

    @abstractmethod
    async def raise_last_seq(self, tenant_id: str, conversation_id: str, seq: int) -> None:
        """Set the conversation's ``last_seq`` to ``seq`` if that is higher."""

    @abstractmethod
    async def close(self) -> None: ...


def direct_messages(engine: AsyncEngine) -> DirectMessages | None:
    """The direct path for ``engine``'s database; None where there is none (in-memory SQLite)."""
    backend = engine.url.get_backend_name()
    if backend == "sqlite":
        from memory.sqlite_direct import SqliteDirect

        return SqliteDirect.beside(engine)
    if backend == "postgresql" and engine.url.get_driver_name() == "asyncpg":
        from memory.pg_direct import PostgresDirect

        return PostgresDirect(engine)
    return None


def source_ref_pattern(source_ref: str) -> str:
    """A LIKE pattern (escape ``/``) for a ``source_refs`` JSON array holding ``source_ref``.

    It only narrows: a caller still checks the refs exactly.
    """
    quoted = json.dumps(source_ref)
    escaped = quoted.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"
