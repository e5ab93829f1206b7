"""Keyset paging used by the data export, on SQLite and Postgres.

``Store.message_pages`` (oldest first) and ``MemoryStore.pages_for_user``
(newest first, superseded items too) must return every row exactly once in
order, including rows that share a timestamp (the id breaks the tie).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memory.db import create_engine, normalize_database_url
from memory.memories import MemoryStore, NewMemory
from memory.migrate import migrate
from memory.store import Store


@pytest.fixture(params=["sqlite", "postgres"])
async def memories(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MemoryStore]:
    raw = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    engine = create_engine(normalize_database_url(raw, tmp_path))
    await migrate(engine)
    try:
        yield MemoryStore(Store(engine))
    finally:
        await engine.dispose()


async def test_message_pages_are_complete_and_oldest_first(memories: MemoryStore) -> None:
    store = memories.store
    tenant = (await store.create_tenant("t")).id
    persona = (await store.create_persona(tenant, slug="p", name="P", data={})).id
    user = (await store.get_or_create_user(tenant, "u")).id
    conv = (await store.create_conversation(tenant, persona_id=persona, user_id=user)).id
    for i in range(23):
        await store.add_message(tenant, conv, role="user", content=f"m{i}")
    pages = [page async for page in store.message_pages(tenant, conv, page=5)]
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [m.content for p in pages for m in p] == [f"m{i}" for i in range(23)]
    exact = [page async for page in store.message_pages(tenant, conv, page=23)]
    assert [len(p) for p in exact] == [23]
    assert [p async for p in store.message_pages(tenant, "conv_missing", page=5)] == []


async def test_memory_pages_cover_every_item_newest_first(memories: MemoryStore) -> None:
    store = memories.store
    tenant = (await store.create_tenant("t")).id
    persona = (await store.create_persona(tenant, slug="p", name="P", data={})).id
    user = (await store.get_or_create_user(tenant, "u")).id
    other = (await store.get_or_create_user(tenant, "someone else")).id
    same_time = datetime(2025, 5, 1, tzinfo=UTC)
    added = await memories.add_many(
        tenant,
        [NewMemory(persona, user, f"tie {i}", valid_from=same_time) for i in range(7)]
        + [NewMemory(persona, user, f"item {i}") for i in range(10)]
        + [NewMemory(persona, other, "not theirs")],
    )
    old = added[0]
    newer = await memories.supersede(tenant, old.id, text="tie 0, corrected")
    assert newer is not None

    pages = [p async for p in memories.pages_for_user(tenant, user, page=4)]
    items = [m for p in pages for m in p]
    assert all(len(p) <= 4 for p in pages)
    assert len(items) == 18 and len({m.id for m in items}) == 18  # superseded one included
    assert {m.user_id for m in items} == {user}
    order = [(m.valid_from, m.id) for m in items]
    assert order == sorted(order, reverse=True)
    listed = await memories.list(tenant, user_id=user, include_superseded=True, limit=1000)
    assert [m.id for m in items] == [m.id for m in listed]
