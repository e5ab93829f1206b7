"""Two replicas writing memories of one user at once lose nothing and duplicate nothing.

Each "replica" is its own engine (its own connection pool) on the same database:
a SQLite file, and Postgres as the non-superuser app role (tests/services_pg.py).
Both write and supersede facts with the *same* supersede keys at the same time,
through :class:`memory.memories.MemoryStore` and through the conversation layer's
:class:`agents.memory.MemoryService`. After the dust settles:

- every write is stored (its id reads back with its text), none is lost;
- each key has exactly one live version (``valid_to IS NULL``), and all versions
  of a key form one chain ending in it (no duplicates, no forks);
- no database error (IntegrityError, deadlock, "database is locked") escapes.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text as sql_text

from agents.memory import MemoryService
from memory.db import create_engine, normalize_database_url
from memory.memories import MemoryRecord, MemoryStore, NewMemory
from memory.migrate import migrate
from memory.store import Store

KEYS = ("name", "home", "job", "pet")
ROUNDS = 12


@pytest.fixture(params=["sqlite", "postgres"])
async def replicas(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[MemoryStore, MemoryStore, str, str, str]]:
    """Two MemoryStores on separate engines, one database; with a tenant, persona, user."""
    if request.param == "postgres":
        raw = request.getfixturevalue("postgres_url")
    else:
        raw = f"sqlite:///{tmp_path / 'shared.db'}"
    url = normalize_database_url(raw, tmp_path)
    engines = [create_engine(url), create_engine(url)]
    await migrate(engines[0])
    a, b = (MemoryStore(Store(e)) for e in engines)
    tenant = (await a.store.create_tenant("t")).id
    persona = (await a.store.create_persona(tenant, slug="p", name="P", data={})).id
    user = (await a.store.get_or_create_user(tenant, "u1")).id
    try:
        yield a, b, tenant, persona, user
    finally:
        for engine in engines:
            await engine.dispose()


async def _all_items(store: MemoryStore, tenant: str, user: str) -> list[MemoryRecord]:
    return await store.list(tenant, user_id=user, include_superseded=True, limit=100_000)


def _key(m: MemoryRecord) -> str | None:
    # From the source reference the writers set (the observable contract).
    return next((r[4:] for r in m.source_refs if r.startswith("key:")), None)


def _check_chains(items: list[MemoryRecord]) -> dict[str, list[MemoryRecord]]:
    """Per key: exactly one live version, and every version leads to it."""
    by_id = {m.id: m for m in items}
    by_key: dict[str, list[MemoryRecord]] = defaultdict(list)
    for m in items:
        if (key := _key(m)) is not None:
            by_key[key].append(m)
    for key, versions in by_key.items():
        live = [m for m in versions if m.live]
        assert len(live) == 1, f"{key}: {len(live)} live versions"
        for m in versions:
            seen = set()
            while m.superseded_by is not None:
                assert m.id not in seen, f"{key}: cycle"
                seen.add(m.id)
                assert m.valid_to is not None
                m = by_id[m.superseded_by]
                assert _key(m) == key, "a chain crossed into another fact"
            assert m.id == live[0].id, f"{key}: a retired version does not lead to the live one"
    return by_key


async def test_two_replicas_add_and_supersede_the_same_keys(
    replicas: tuple[MemoryStore, MemoryStore, str, str, str],
) -> None:
    a, b, tenant, persona, user = replicas
    written: dict[str, str] = {}  # id -> text

    async def writer(store: MemoryStore, name: str, seed: int) -> None:
        rng = random.Random(seed)
        for i in range(ROUNDS):
            key = rng.choice(KEYS)
            text = f"{name} says {key} #{i}"
            live = [
                m for m in await store.list(tenant, user_id=user, kind="fact") if _key(m) == key
            ]
            if live and rng.random() < 0.7:
                # The usual path: supersede the version this replica saw
                # (which the other one may be retiring at the same moment).
                record = await store.supersede(
                    tenant, live[0].id, text=text, source_refs=(f"key:{key}",)
                )
            else:
                # A replica that saw no live version adds one (so does the other).
                record = await store.add(
                    tenant,
                    persona_id=persona,
                    user_id=user,
                    text=text,
                    source_refs=(f"key:{key}",),
                )
            assert record is not None
            written[record.id] = text
            # Episodic turns in the same stream: plain inserts, never conflicting.
            turns = await store.add_many(
                tenant,
                [NewMemory(persona, user, f"{name} turn {i}.{n}", kind="turn") for n in range(3)],
            )
            written.update({t.id: t.text for t in turns})
            await asyncio.sleep(0)

    await asyncio.gather(*(writer(s, f"r{n}", n) for n, s in enumerate((a, b, a, b))))

    items = await _all_items(b, tenant, user)
    stored = {m.id: m.text for m in items}
    assert stored == written  # every write is there, nothing extra
    by_key = _check_chains(items)
    assert sum(len(v) for v in by_key.values()) == 4 * ROUNDS


async def test_a_batch_with_keys_races_another_batch(
    replicas: tuple[MemoryStore, MemoryStore, str, str, str],
) -> None:
    """add_many with several keyed items, in opposite key orders, from both replicas."""
    a, b, tenant, persona, user = replicas

    def batch(name: str, keys: tuple[str, ...]) -> list[NewMemory]:
        return [
            NewMemory(persona, user, f"{name} {key}", source_refs=(f"key:{key}",)) for key in keys
        ]

    results = await asyncio.gather(
        *(
            store.add_many(tenant, batch(f"{name}{i}", keys))
            for i in range(6)
            for store, name, keys in ((a, "a", KEYS), (b, "b", tuple(reversed(KEYS))))
        )
    )
    written = {r.id for records in results for r in records}
    items = await _all_items(a, tenant, user)
    assert {m.id for m in items} == written
    by_key = _check_chains(items)
    assert sorted(by_key) == sorted(KEYS)
    assert all(len(v) == 12 for v in by_key.values())


async def test_a_repeated_key_within_one_batch_keeps_the_last(
    replicas: tuple[MemoryStore, MemoryStore, str, str, str],
) -> None:
    a, _, tenant, persona, user = replicas
    first, second = await a.add_many(
        tenant,
        [
            NewMemory(persona, user, "lives in Lyon", source_refs=("key:home",)),
            NewMemory(persona, user, "lives in Paris", source_refs=("key:home",)),
        ],
    )
    old = await a.get(tenant, first.id)
    assert old is not None and old.superseded_by == second.id and not old.live
    live = await a.list(tenant, user_id=user)
    assert [m.text for m in live] == ["lives in Paris"]


async def test_two_memory_services_remember_the_same_facts(
    replicas: tuple[MemoryStore, MemoryStore, str, str, str],
) -> None:
    """The conversation layer's write path (turns + extracted facts) on two replicas."""
    a, b, tenant, persona, user = replicas
    services = [MemoryService(a, None), MemoryService(b, None)]
    homes = ["Lyon", "Paris", "Oslo", "Rome", "Kyiv", "Lima"]

    async def remember(n: int) -> dict[str, Any]:
        turns = [
            {"id": f"m{n}u", "role": "user", "content": f"My name is Ada. I live in {homes[n]}."},
            {"id": f"m{n}a", "role": "assistant", "content": "Nice to meet you."},
        ]
        return await services[n % 2].remember(
            tenant,
            persona_id=persona,
            user_id=user,
            user_name="Ada",
            persona_name="P",
            turns=turns,
        )

    results = await asyncio.gather(*(remember(n) for n in range(len(homes))))

    items = await _all_items(a, tenant, user)
    assert sum(r["turns"] for r in results) == 2 * len(homes)
    assert len([m for m in items if m.kind == "turn"]) == 2 * len(homes)
    by_key = _check_chains(items)
    assert {"name", "home"} <= set(by_key)
    live_home = next(m for m in by_key["home"] if m.live)
    assert any(h in live_home.text for h in homes)
    # Every stated home is in the history of the fact (none lost), once live.
    for home in homes:
        assert any(home in m.text for m in by_key["home"]), home


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migration_0004_repairs_duplicates_left_by_the_race(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    """Before 0004 two replicas could leave two live versions; the migration keeps the newest."""
    raw = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    engine = create_engine(normalize_database_url(raw, tmp_path))
    try:
        await migrate(engine, "0003")
        store = Store(engine)
        tenant = (await store.create_tenant("t")).id
        persona = (await store.create_persona(tenant, slug="p", name="P", data={})).id
        user = (await store.get_or_create_user(tenant, "u")).id
        stamps = [f"2025-01-0{d} 00:00:00+00:00" for d in (1, 2, 3)]
        async with store._tx(tenant) as s:
            for n, (text_, refs, stamp) in enumerate(
                [
                    ("lives in Lyon", '["key:home"]', stamps[0]),
                    ("lives in Paris", '["key:home"]', stamps[1]),
                    ("likes tea", '["key:likes tea"]', stamps[2]),
                    ("a turn", "[]", stamps[2]),
                ]
            ):
                await s.execute(
                    sql_text(
                        "INSERT INTO memories (id, tenant_id, persona_id, user_id, kind, text,"
                        " importance, pinned, source_message_ids, source_refs, valid_from,"
                        " created_at, updated_at) VALUES (:id, :t, :p, :u, 'fact', :text, 0.5,"
                        " false, '[]', :refs, :vf, :vf, :vf)"
                    ),
                    {
                        "id": f"mem_{n}",
                        "t": tenant,
                        "p": persona,
                        "u": user,
                        "text": text_,
                        "refs": refs,
                        "vf": datetime.fromisoformat(stamp),
                    },
                )
        await migrate(engine)
        memories = MemoryStore(store)
        items = {m.id: m for m in await _all_items(memories, tenant, user)}
        assert [m.text for m in items.values() if m.live and m.supersede_key == "home"] == [
            "lives in Paris"
        ]
        assert items["mem_0"].superseded_by == "mem_1" and not items["mem_0"].live
        assert items["mem_2"].supersede_key == "likes tea" and items["mem_2"].live
        assert items["mem_3"].supersede_key is None and items["mem_3"].live
        _check_chains(list(items.values()))
    finally:
        await engine.dispose()
