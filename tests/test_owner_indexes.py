"""Partial HNSW indexes for people with very many memories (Postgres, memory/owner_indexes.py).

Built on a real Postgres with pgvector (tests/services_pg.py), as the
non-superuser app role that owns the tables. The point of the index is that
Postgres *uses* it for that person's filtered top-k, so the plan is checked
with EXPLAIN, and that results stay right (recall against exact scoring).
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from memory.memories import MemoryStore, NewMemory
from memory.owner_indexes import PREFIX, OwnerIndexes, index_name
from memory.retrieval import Scoring, search
from memory.store import Store
from memory.vector_search import DEFAULT_EF_SEARCH, approximate_settings
from tests.test_memory_contract import FakeEmbedder, Owner, _owner
from tests.test_store_contract import STORE_BACKENDS

DIMS = 384


@pytest.fixture
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_BACKENDS["postgres"](request, tmp_path) as s:
        yield s


def _vector(rng: random.Random) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(DIMS)]
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


async def _fill(
    memories: MemoryStore, o: Owner, n: int, seed: int, *, anchor: int | None = None
) -> list[list[float]]:
    """``n`` items "memory <i>" with random vectors; item ``anchor`` gets the fake
    model's vector of its own text (so a search for that text finds it by vector)."""
    rng = random.Random(seed)
    vectors = [
        FakeEmbedder.vector(f"memory {i}") if i == anchor else _vector(rng) for i in range(n)
    ]
    await memories.add_many(
        o.tenant,
        [
            NewMemory(
                persona_id=o.persona,
                user_id=o.user,
                text=f"memory {i}",
                kind="turn",
                embedding=v,
                embedding_model=FakeEmbedder.model,
            )
            for i, v in enumerate(vectors)
        ],
    )
    return vectors


async def _indexes(store: Store) -> dict[str, str]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE tablename = 'memories' AND indexname LIKE :p"
            ),
            {"p": PREFIX + "%"},
        )
        return {r[0]: r[1] for r in rows}


async def _plan(memories: MemoryStore, o: Owner, vector: list[float]) -> str:
    """EXPLAIN of the statement the approximate path sends, in its settings."""
    engine = memories.store.engine
    sent: dict[str, Any] = {}

    def grab(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "<=>" in statement:
            sent["sql"], sent["params"] = statement, params

    event.listen(engine.sync_engine, "before_cursor_execute", grab)
    try:
        await memories.nearest(o.tenant, o.persona, o.user, vector, limit=10, exact=False)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", grab)
    async with memories.store._tx(o.tenant) as s:
        for name, value in approximate_settings(DEFAULT_EF_SEARCH).items():
            await s.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
        conn = await s.connection()
        plan = (await conn.exec_driver_sql("EXPLAIN " + sent["sql"], sent["params"])).all()
    return " ".join(r[0] for r in plan)


async def test_a_heavy_persons_index_is_built_used_and_dropped_when_forgotten(
    store: Store,
) -> None:
    memories = MemoryStore(store)
    heavy = await _owner(store, "heavy")
    other = await _owner(store, "other", tenant=heavy.tenant)
    vectors = await _fill(memories, heavy, 600, seed=1)
    await _fill(memories, other, 600, seed=2)
    assert memories.owner_indexes is not None

    built = await memories.owner_indexes.build(heavy.tenant, heavy.persona, heavy.user)
    again = await memories.owner_indexes.build(heavy.tenant, heavy.persona, heavy.user)

    assert built is True and again is False
    defs = await _indexes(store)
    name = index_name(heavy.tenant, heavy.persona, heavy.user)
    assert list(defs) == [name]
    assert "hnsw" in defs[name] and heavy.user in defs[name] and "valid_to IS NULL" in defs[name]
    assert await memories.owner_indexes.has(heavy.tenant, heavy.persona, heavy.user)
    assert not await memories.owner_indexes.has(other.tenant, other.persona, other.user)
    # Postgres picks the person's own index for their filtered top-k.
    async with store.engine.connect() as conn:
        await conn.execute(text("ANALYZE memories"))
    assert name in await _plan(memories, heavy, vectors[0])
    assert name not in await _plan(memories, other, vectors[0])

    # The approximate path finds what exact scoring finds.
    hits = 0
    rng = random.Random(9)
    for _ in range(20):
        q = vectors[rng.randrange(len(vectors))]
        q = [x + rng.gauss(0, 0.02) for x in q]
        exact = await memories.nearest(
            heavy.tenant, heavy.persona, heavy.user, q, limit=10, exact=True
        )
        approx = await memories.nearest(
            heavy.tenant, heavy.persona, heavy.user, q, limit=10, exact=False
        )
        hits += len({i for i, _ in exact} & {i for i, _ in approx})
    assert hits / 200 >= 0.95

    # Forgetting the person drops their index; the other person's rows are untouched.
    assert await memories.delete_for_user(heavy.tenant, heavy.user) == 600
    assert await _indexes(store) == {}
    assert not await memories.owner_indexes.has(heavy.tenant, heavy.persona, heavy.user)


async def test_retrieval_asks_for_an_index_past_the_limit_and_then_uses_it(store: Store) -> None:
    memories = MemoryStore(store)
    o = await _owner(store, "grows")
    await _fill(memories, o, 120, seed=3, anchor=7)
    scoring = Scoring(exact_vector_limit=100)
    assert memories.owner_indexes is not None

    # Over the limit without an index: exact this time, and a build starts in the background.
    assert not await memories.approximate_ok(
        o.tenant, o.persona, o.user, items=120, exact_limit=100
    )
    await memories.owner_indexes.wait_built()
    assert index_name(o.tenant, o.persona, o.user) in await _indexes(store)
    assert await memories.approximate_ok(o.tenant, o.persona, o.user, items=120, exact_limit=100)
    # At or under the limit: always exact, no index asked for.
    small = await _owner(store, "small")
    await _fill(memories, small, 50, seed=4)
    assert not await memories.approximate_ok(
        small.tenant, small.persona, small.user, items=50, exact_limit=100
    )
    await memories.owner_indexes.wait_built()
    assert len(await _indexes(store)) == 1

    found = await search(
        memories, FakeEmbedder(), o.tenant, o.persona, o.user, "memory 7", k=3, scoring=scoring
    )
    # The vector neighbours came through the person's index: the item whose text
    # is the query is the nearest, at similarity 1.
    best = {f.memory.text: f for f in found}["memory 7"]
    assert best.vector_rank == 1 and best.vector_similarity == pytest.approx(1.0)
    assert any(f.vector_similarity is not None for f in found)


async def test_the_number_of_indexes_is_capped_and_ids_are_checked(store: Store) -> None:
    memories = MemoryStore(store)
    a = await _owner(store, "a")
    b = await _owner(store, "b")
    await _fill(memories, a, 30, seed=5)
    await _fill(memories, b, 30, seed=6)
    capped = OwnerIndexes(store.engine, max_indexes=1)

    assert await capped.build(a.tenant, a.persona, a.user) is True
    assert await capped.build(b.tenant, b.persona, b.user) is False  # the cap
    assert list(await _indexes(store)) == [index_name(a.tenant, a.persona, a.user)]
    with pytest.raises(ValueError, match="not an id"):
        await capped.build(a.tenant, "p' OR '1'='1", a.user)


async def test_an_invalid_index_from_an_interrupted_build_is_rebuilt(
    store: Store, request: pytest.FixtureRequest
) -> None:
    memories = MemoryStore(store)
    o = await _owner(store, "broken")
    vectors = await _fill(memories, o, 200, seed=7)
    name = index_name(o.tenant, o.persona, o.user)
    # What an interrupted CREATE INDEX CONCURRENTLY leaves: an index marked invalid
    # (here a wrong one, marked so by the superuser, as only it may write the catalog).
    async with store.engine.connect() as conn:
        await conn.execute(text(f"CREATE INDEX {name} ON memories (id)"))
        await conn.commit()
        database = (await conn.execute(text("SELECT current_database()"))).scalar_one()
    pg = request.getfixturevalue("pg_server")
    pg.sql(
        f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = '{name}'::regclass",
        database=database,
    )
    indexes = OwnerIndexes(store.engine)
    await indexes.refresh()
    assert not await indexes.has(o.tenant, o.persona, o.user)  # invalid: not used

    assert await indexes.build(o.tenant, o.persona, o.user) is True

    defs = await _indexes(store)
    assert "hnsw" in defs[name]
    assert await indexes.has(o.tenant, o.persona, o.user)
    async with store.engine.connect() as conn:
        await conn.execute(text("ANALYZE memories"))
    assert name in await _plan(memories, o, vectors[0])
