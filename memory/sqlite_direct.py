"""Short, hot transactions on SQLite without aiosqlite's round trips.

aiosqlite sends every DB-API call (cursor, execute, fetch, close, commit,
the pool's rollback) to its thread and back, and SQLAlchemy's async layer
adds a greenlet switch to each: storing one message took ~0.7 ms of CPU and
~2 ms of wall time on a serving event loop, and a reply's first token waited
for two such transactions (the message, the recent history).

Here a whole transaction is one function on a synchronous pysqlite
connection (the same SQLAlchemy dialect family, so values are stored and
read back in the same formats), run **inline** on the caller's thread: a
one-statement transaction takes ~0.2 ms, less than a trip to another thread
(whose result then also waits for the GIL while the event loop is busy).
Inline statements never wait for a lock: their connection's busy timeout is
zero, and a transaction that finds the file locked by another connection (a
long write on the async engine) is rolled back and run again on a thread of
its own, with the normal timeout, so the event loop never sleeps in SQLite's
busy handler. Nor does it checkpoint: copying the WAL back into the database
file ends in an fsync, so the inline connection leaves that to a passive
checkpoint on the thread every ``CHECKPOINT_EVERY`` transactions.

Only the per-message operations of memory/direct.py use it; everything else
stays on the async engine.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import structlog
from sqlalchemy import (
    Connection,
    Engine,
    Text,
    bindparam,
    cast,
    create_engine,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from memory.db import tune_sqlite
from memory.direct import (
    SUMMARY_CANDIDATES,
    DirectMessages,
    DuplicateMessage,
    source_ref_pattern,
)
from memory.memory_records import RECORD_COLUMNS, MemoryRecord, record_from_result
from memory.models import Conversation, Memory, Message, aware, utcnow
from memory.records import MessageRecord

T = TypeVar("T")

BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
# SQLite's own automatic checkpoint runs at 1,000 WAL pages; messages are small,
# so this many transactions stay well within that between two checkpoints.
CHECKPOINT_EVERY = 200

log = structlog.get_logger(__name__)


def _sync_engine(url: URL, busy_timeout_ms: int, *, inline: bool) -> Engine:
    engine = create_engine(
        url.set(drivername="sqlite+pysqlite"),
        connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
    )
    tune_sqlite(engine, busy_timeout_ms=busy_timeout_ms, autocheckpoint=not inline)
    return engine


def is_busy(exc: OperationalError) -> bool:
    """Whether ``exc`` is SQLite saying another connection holds the lock it needs."""
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code in BUSY_CODES or "database is locked" in str(exc.orig)


class SqliteDirect(DirectMessages):
    """Runs ``fn(connection)`` in one transaction: inline, or on a thread when the file is busy."""

    def __init__(self, inline: Engine, waiting: Engine) -> None:
        self.inline = inline
        self.waiting = waiting
        self.waited = 0  # transactions that found the file busy and went to the thread
        self.checkpoints = 0
        self._since_checkpoint = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salon-sqlite")

    @classmethod
    def beside(cls, engine: AsyncEngine) -> SqliteDirect | None:
        """A direct runner on the SQLite file of ``engine``; None for other databases
        (and for in-memory SQLite, which a second connection would not see)."""
        url = engine.url
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return cls(_sync_engine(url, 0, inline=True), _sync_engine(url, 30000, inline=False))

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` inside one transaction (committed when it returns, rolled back if it raises).

        ``fn`` must be short and must not block: it runs on the event loop.
        """
        try:
            result = self._transaction(self.inline, fn)
        except OperationalError as exc:
            if not is_busy(exc):
                raise
        else:
            self._since_checkpoint += 1
            if self._since_checkpoint >= CHECKPOINT_EVERY:
                self._since_checkpoint = 0
                self._thread.submit(self._checkpoint)
            return result
        # Nothing was written (the transaction rolled back): wait for the lock elsewhere.
        self.waited += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._transaction, self.waiting, fn)

    @staticmethod
    def _transaction(engine: Engine, fn: Callable[[Connection], T]) -> T:
        with engine.begin() as conn:
            return fn(conn)

    def _checkpoint(self) -> None:
        """Copy the WAL back into the database file, without waiting for anyone."""
        try:
            with self.waiting.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            self.checkpoints += 1
        except Exception as exc:  # the next one tries again; SQLite's own limit still holds
            log.warning("sqlite_checkpoint_failed", error=repr(exc))

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._thread.shutdown(wait=True)
        self.inline.dispose()
        self.waiting.dispose()

    # -- the per-message operations ---------------------------------------------
    # Statements built once, with bound parameters: SQLAlchemy compiles each once
    # and then only binds values (building one per call cost more than running it).

    async def insert_message(self, values: dict[str, Any]) -> None:
        try:
            await self.run(lambda conn: conn.execute(_INSERT, values))
        except IntegrityError as exc:
            if values.get("client_id") is None:
                raise
            raise DuplicateMessage(values["client_id"]) from exc

    async def recent_messages(
        self, tenant_id: str, conversation_id: str, limit: int
    ) -> list[MessageRecord]:
        # A reply reads the last 50 messages before its first token: through
        # SQLAlchemy's result rows that was 16 % of the embedded server's CPU per
        # reply; pysqlite's own tuples and a C timestamp parse are a fraction.
        params = (tenant_id, conversation_id, limit)
        rows = await self.run(lambda conn: _driver(conn).execute(_RECENT_SQL, params).fetchall())
        return [
            MessageRecord(
                id=row[0],
                tenant_id=row[1],
                conversation_id=row[2],
                role=row[3],
                content=row[4],
                client_id=row[5],
                status=row[6],
                response_id=row[7],
                created_at=_timestamp(row[8]),
            )
            for row in reversed(rows)
        ]

    async def live_summary(
        self, tenant_id: str, persona_id: str, user_id: str, source_ref: str
    ) -> MemoryRecord | None:
        params = {
            "tenant_id": tenant_id,
            "persona_id": persona_id,
            "user_id": user_id,
            "pattern": source_ref_pattern(source_ref),
        }
        rows = await self.run(lambda conn: conn.execute(_SUMMARY, params).all())
        records = (record_from_result(row) for row in rows)
        return next((r for r in records if source_ref in r.source_refs), None)

    async def raise_last_seq(self, tenant_id: str, conversation_id: str, seq: int) -> None:
        params = {"b_tenant": tenant_id, "b_id": conversation_id, "b_seq": seq, "b_now": utcnow()}
        await self.run(lambda conn: conn.execute(_RAISE_SEQ, params))


_INSERT = insert(Message)
# The newest messages first; the columns in MESSAGE_COLUMNS order.
_RECENT_SQL = (
    "SELECT id, tenant_id, conversation_id, role, content, client_id, status, response_id,"
    " created_at FROM messages"
    " WHERE tenant_id = ? AND conversation_id = ?"
    " ORDER BY created_at DESC, id DESC LIMIT ?"
)


def _driver(conn: Connection) -> sqlite3.Connection:
    """The pysqlite connection under ``conn`` (inside its transaction)."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


def _timestamp(stored: str | datetime) -> datetime:
    """A timestamp as SQLAlchemy stores it on SQLite ("YYYY-MM-DD HH:MM:SS.ffffff", UTC)."""
    if isinstance(stored, str):
        stored = datetime.fromisoformat(stored)
    return aware(stored)


_SUMMARY = (
    select(*RECORD_COLUMNS)
    .where(
        Memory.tenant_id == bindparam("tenant_id"),
        Memory.persona_id == bindparam("persona_id"),
        Memory.user_id == bindparam("user_id"),
        Memory.kind == "summary",
        Memory.valid_to.is_(None),
        cast(Memory.source_refs, Text).like(bindparam("pattern"), escape="/"),
    )
    .order_by(Memory.valid_from.desc(), Memory.id.desc())
    .limit(SUMMARY_CANDIDATES)
)
_RAISE_SEQ = (
    update(Conversation)
    .where(
        Conversation.tenant_id == bindparam("b_tenant"),
        Conversation.id == bindparam("b_id"),
        Conversation.last_seq < bindparam("b_seq"),
    )
    .values(last_seq=bindparam("b_seq"), updated_at=bindparam("b_now"))
)
