"""Per-message SQLite transactions run inline, and wait on a thread when the file is locked.

The operations themselves (both backends) are covered by tests/test_store_contract.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from agents.personas import create_persona
from memory.db import create_engine, normalize_database_url
from memory.direct import direct_messages
from memory.migrate import migrate
from memory.pg_direct import PostgresDirect
from memory.sqlite_direct import SqliteDirect
from memory.store import Store

TENANT = "ten_direct"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(create_engine(normalize_database_url(None, tmp_path)))
    await migrate(s.engine)
    await s.create_tenant("t", tenant_id=TENANT)
    yield s
    await s.close()


async def _conversation(store: Store) -> str:
    persona = await create_persona(store, TENANT, {"name": "Ada"})
    user = await store.get_or_create_user(TENANT, "u")
    conv = await store.create_conversation(TENANT, persona_id=persona.id, user_id=user.id)
    return conv.id


async def test_a_locked_file_makes_a_write_wait_off_the_event_loop(
    store: Store, tmp_path: Path
) -> None:
    conv = await _conversation(store)
    direct = store._direct
    assert isinstance(direct, SqliteDirect)
    # Another connection (another process, a long write of the async engine) holds the lock.
    other = sqlite3.connect(tmp_path / "salon.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    write = asyncio.create_task(store.add_message(TENANT, conv, role="user", content="hi"))
    await asyncio.sleep(0.3)
    assert not write.done()  # waiting for the lock...
    assert ticks >= 10  # ...without stopping the event loop
    other.execute("COMMIT")
    message, created = await asyncio.wait_for(write, 10)
    ticker.cancel()
    assert created and direct.waited == 1
    assert [m.id for m in await store.list_messages(TENANT, conv)] == [message.id]
    other.close()


async def test_an_error_that_is_not_a_lock_is_raised_and_nothing_is_kept(store: Store) -> None:
    direct = store._direct
    assert isinstance(direct, SqliteDirect)
    conv = await _conversation(store)

    def insert_then_fail(conn: object) -> None:
        conn.execute(  # type: ignore[attr-defined]
            text("UPDATE conversations SET last_seq = 99 WHERE id = :id"), {"id": conv}
        )
        conn.execute(text("SELECT * FROM no_such_table"))  # type: ignore[attr-defined]

    with pytest.raises(Exception, match="no_such_table"):
        await direct.run(insert_then_fail)
    assert direct.waited == 0
    got = await store.get_conversation(TENANT, conv)
    assert got is not None and got.last_seq == 0  # rolled back


async def test_a_repeated_client_id_returns_the_first_message(store: Store) -> None:
    conv = await _conversation(store)
    first, created = await store.add_message(
        TENANT, conv, role="user", content="one", client_id="c1"
    )
    again, created_again = await store.add_message(
        TENANT, conv, role="user", content="two", client_id="c1"
    )
    assert created and not created_again
    assert again.id == first.id and again.content == "one"
    assert again.created_at == first.created_at  # as stored, read back by the async engine


async def test_history_read_directly_equals_what_was_stored_and_what_the_orm_reads(
    store: Store,
) -> None:
    conv = await _conversation(store)
    stored = [
        (await store.add_message(TENANT, conv, role=role, content=text, **extra))[0]
        for role, text, extra in (
            ("user", "hi ✓", {"client_id": "c1"}),
            ("assistant", "hello", {"status": "cancelled", "response_id": "resp_1"}),
            ("user", "again", {}),
        )
    ]
    direct = await store.list_messages(TENANT, conv, limit=2)  # the direct path
    assert direct == stored[1:]  # newest two, oldest first, every field
    assert all(m.created_at.tzinfo is not None for m in direct)
    # The ORM's reading of the same rows (the path with a ``before`` pivot).
    assert await store.list_messages(TENANT, conv, limit=5, before="msg_none") == stored


def test_no_direct_runner_for_memory_sqlite_or_postgres() -> None:
    assert SqliteDirect.beside(create_engine("sqlite+aiosqlite:///:memory:")) is None
    postgres = create_engine("postgresql+asyncpg://u@localhost/db")
    assert SqliteDirect.beside(postgres) is None
    assert isinstance(direct_messages(postgres), PostgresDirect)


async def test_the_inline_connection_leaves_checkpoints_to_the_thread(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import memory.sqlite_direct as direct_module

    direct = store._direct
    assert isinstance(direct, SqliteDirect)
    monkeypatch.setattr(direct_module, "CHECKPOINT_EVERY", 3)
    conv = await _conversation(store)
    with direct.inline.connect() as conn:  # its commits never fsync the database file
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    for seq in range(1, 4):
        await store.record_last_seq(TENANT, conv, seq)
    for _ in range(100):
        if direct.checkpoints:
            break
        await asyncio.sleep(0.02)
    assert direct.checkpoints == 1
    got = await store.get_conversation(TENANT, conv)
    assert got is not None and got.last_seq == 3
