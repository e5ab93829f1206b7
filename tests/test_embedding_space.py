"""Changing the embedding model: the table adopts its size, stale items get new vectors.

Runs on every database backend (``STORE_BACKENDS``): on Postgres the column
really becomes ``vector(n)`` with its HNSW index rebuilt; SQLite keeps any
size and leaves vectors of another size out of search. The last tests run the
``salon memory reembed`` command against a loopback OpenAI-compatible
embeddings endpoint.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from agents.reembed import prepare_embedding_space, queue_reembed_if_stale, reembed
from memory.db import create_engine
from memory.embeddings.base import Embedder, Vector
from memory.memories import MemoryStore, NewMemory
from memory.retrieval import search
from memory.store import Store
from tests.fakes.embeddings_server import FakeEmbeddings
from tests.test_memory_contract import FakeEmbedder, Owner, _owner
from tests.test_store_contract import STORE_BACKENDS

ROOT = Path(__file__).resolve().parents[1]


class SmallEmbedder(Embedder):
    """A different 'model': 8-d vectors from letter counts (words sharing letters are close)."""

    name = "small"
    model = "small-letters-8"
    dimensions = 8

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def _embed_batch(self, texts: list[str]) -> list[Vector]:
        self.texts += texts
        return [self.vector(t) for t in texts]

    @staticmethod
    def vector(text_: str) -> Vector:
        v = [0.01] * 8
        for ch in text_.lower():
            if ch.isalpha():
                v[(ord(ch) - 97) % 8] += 1.0
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]


@pytest.fixture(params=list(STORE_BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_BACKENDS[request.param](request, tmp_path) as s:
        yield s


async def _column_size(store: Store) -> int | None:
    return await MemoryStore(store).stored_dimensions()


async def _index_exists(store: Store) -> bool:
    async with store.engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_memories_embedding'")
        )
        return bool(found.scalar_one())


async def _items(memories: MemoryStore, o: Owner, *texts: str, model_vectors: bool) -> list[str]:
    added = await memories.add_many(
        o.tenant,
        [
            NewMemory(
                persona_id=o.persona,
                user_id=o.user,
                text=t,
                embedding=FakeEmbedder.vector(t) if model_vectors else None,
                embedding_model="fake-bow-384" if model_vectors else None,
            )
            for t in texts
        ],
    )
    return [m.id for m in added]


async def test_same_size_changes_nothing(store: Store) -> None:
    memories = MemoryStore(store)
    o = await _owner(store, "same")
    [kept] = await _items(memories, o, "likes dogs", model_vectors=True)

    assert await prepare_embedding_space(memories, FakeEmbedder()) is False
    assert await prepare_embedding_space(memories, None) is False

    assert memories.dimensions == 384
    assert (await memories.get(o.tenant, kept)).has_embedding  # type: ignore[union-attr]
    if store.engine.dialect.name == "postgresql":
        assert await _column_size(store) == 384


async def test_adopting_another_size(store: Store) -> None:
    memories = MemoryStore(store)
    o = await _owner(store, "resize")
    [old] = await _items(memories, o, "likes dogs", model_vectors=True)

    changed = await prepare_embedding_space(memories, SmallEmbedder())

    assert memories.dimensions == 8
    if store.engine.dialect.name == "postgresql":
        assert changed is True
        assert await _column_size(store) == 8
        assert await _index_exists(store)  # HNSW rebuilt for the new size
        # Vectors of the old model were cleared with the column.
        assert not (await memories.get(o.tenant, old)).has_embedding  # type: ignore[union-attr]
    else:
        assert changed is False  # SQLite needs no DDL; old vectors are merely stale
    # Vectors of the new size are stored; the old size is refused before the database.
    added = await memories.add(
        o.tenant,
        persona_id=o.persona,
        user_id=o.user,
        text="cats",
        embedding=SmallEmbedder.vector("cats"),
        embedding_model=SmallEmbedder.model,
    )
    assert added.has_embedding
    with pytest.raises(ValueError, match="384 dimensions; memories store 8"):
        await memories.add(
            o.tenant,
            persona_id=o.persona,
            user_id=o.user,
            text="x",
            embedding=FakeEmbedder.vector("x"),
        )
    # A second replica starting with the same embedder changes nothing.
    assert await MemoryStore(store).adopt_dimensions(8) is False


async def test_reembed_gives_every_stale_item_a_vector(store: Store) -> None:
    memories = MemoryStore(store)
    a = await _owner(store, "a")
    b = await _owner(store, "b")  # another tenant: the job works across tenants
    await _items(memories, a, "I walk my puppy", "We went to the opera", model_vectors=True)
    await _items(memories, b, "Tokyo is home", model_vectors=False)
    embedder = SmallEmbedder()
    await prepare_embedding_space(memories, embedder)
    assert await memories.count_stale(embedder.model) == 3

    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    result = await reembed(memories, embedder, batch_size=2, progress=progress)

    assert result["stale"] == 3 and result["embedded"] == 3 and result["skipped"] == 0
    assert seen[0] == (0, 3) and seen[-1] == (3, 3) and len(seen) == 3  # two batches
    assert sorted(embedder.texts) == sorted(
        ["I walk my puppy", "We went to the opera", "Tokyo is home"]
    )
    assert await memories.count_stale(embedder.model) == 0
    for o in (a, b):
        for m in await memories.list(o.tenant, persona_id=o.persona, user_id=o.user):
            assert m.has_embedding
    # Vector search works in the new space.
    near = await memories.nearest(
        a.tenant,
        a.persona,
        a.user,
        SmallEmbedder.vector("opera"),
        limit=1,
        exact=True,
        embedding_model=embedder.model,
    )
    assert [n for n, _ in near] and near[0][1] > 0.5
    # Nothing stale: a second run embeds nothing, and no job is queued.
    again = await reembed(memories, embedder)
    assert again["stale"] == 0 and again["embedded"] == 0


async def test_search_ignores_vectors_of_the_old_model_until_reembedded(store: Store) -> None:
    memories = MemoryStore(store)
    o = await _owner(store, "search")
    await _items(memories, o, "my dog is called Rex", "tax deadline in April", model_vectors=True)
    embedder = SmallEmbedder()
    await prepare_embedding_space(memories, embedder)

    # Before re-embedding: no comparable vectors, search still answers by keywords.
    found = await search(memories, embedder, o.tenant, o.persona, o.user, "Rex", k=1)
    assert [f.memory.text for f in found] == ["my dog is called Rex"]
    near = await memories.nearest(
        o.tenant,
        o.persona,
        o.user,
        SmallEmbedder.vector("dog"),
        limit=5,
        exact=True,
        embedding_model=embedder.model,
    )
    assert near == []

    await reembed(memories, embedder)
    near = await memories.nearest(
        o.tenant,
        o.persona,
        o.user,
        SmallEmbedder.vector("dog"),
        limit=5,
        exact=True,
        embedding_model=embedder.model,
    )
    assert len(near) == 2


async def test_a_vector_never_lands_on_text_edited_meanwhile(store: Store) -> None:
    memories = MemoryStore(store)
    o = await _owner(store, "edit")
    [item] = await _items(memories, o, "lives in Paris", model_vectors=False)
    await prepare_embedding_space(memories, SmallEmbedder())
    rows = await memories.stale_batch(SmallEmbedder.model, limit=10)
    assert [r.id for r in rows] == [item]

    await memories.update(o.tenant, item, text="lives in Lyon")  # the edit wins the race
    updated = await memories.set_embeddings(rows, [SmallEmbedder.vector("lives in Paris")], "m")

    assert updated == 0
    got = await memories.get(o.tenant, item)
    assert got is not None and got.text == "lives in Lyon" and not got.has_embedding


async def test_reembed_job_is_queued_once_when_items_are_stale(store: Store) -> None:
    class Runner:
        def __init__(self) -> None:
            self.queued: list[tuple[str, str | None]] = []

        async def enqueue(
            self, kind: str, args: dict[str, object], *, job_id: str | None = None
        ) -> str:
            self.queued.append((kind, job_id))
            return job_id or "j"

    memories = MemoryStore(store)
    embedder = SmallEmbedder()
    await prepare_embedding_space(memories, embedder)
    runner = Runner()
    assert await queue_reembed_if_stale(runner, memories, embedder) is False  # empty table

    o = await _owner(store, "q")
    await _items(memories, o, "plays guitar", model_vectors=False)
    assert await queue_reembed_if_stale(runner, memories, embedder) is True
    assert runner.queued == [("memory.reembed", "memory-reembed-8-small-letters-8")]


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_replica_still_on_the_old_size_loses_no_memory(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with STORE_BACKENDS[backend](request, tmp_path) as store:
        old = MemoryStore(store)  # believes the column is vector(384)
        o = await _owner(store, "rolling")
        await prepare_embedding_space(MemoryStore(store), SmallEmbedder())  # the new replica

        [kept] = await _items(old, o, "my sister is Ada", model_vectors=True)

        got = await old.get(o.tenant, kept)
        assert got is not None and got.text == "my sister is Ada" and not got.has_embedding


@pytest.mark.parametrize("backend", ["postgres"])
async def test_replicas_adopting_together_change_the_column_once(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with STORE_BACKENDS[backend](request, tmp_path) as store:
        second = Store(create_engine(str(store.engine.url.render_as_string(hide_password=False))))
        try:
            changed = await asyncio.gather(
                MemoryStore(store).adopt_dimensions(16), MemoryStore(second).adopt_dimensions(16)
            )
        finally:
            await second.close()
        assert sorted(changed) == [False, True]
        assert await _column_size(store) == 16


# -- the command line, against an OpenAI-compatible endpoint --------------------------


@pytest.fixture(scope="module")
def embeddings_endpoint() -> Iterator[FakeEmbeddings]:
    server = FakeEmbeddings(default_dims=12).start()
    yield server
    server.stop()


@pytest.mark.parametrize("backend", list(STORE_BACKENDS))
async def test_salon_memory_reembed_command(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    embeddings_endpoint: FakeEmbeddings,
) -> None:
    embeddings_endpoint.requests.clear()
    async with STORE_BACKENDS[backend](request, tmp_path) as store:
        memories = MemoryStore(store)
        o = await _owner(store, "cli")
        await _items(memories, o, "loves jazz", "hates rain", model_vectors=True)
        url = store.engine.url.render_as_string(hide_password=False)
        env = {
            **os.environ,
            "SALON_DATA_DIR": str(tmp_path / "data"),
            "SALON_DATABASE_URL": url,
            "SALON_EMBEDDINGS_BASE_URL": embeddings_endpoint.base_url,
            "SALON_EMBEDDINGS_MODEL": "fake-embed-12",
            "SALON_EMBEDDINGS_DIMENSIONS": "12",
            "COLUMNS": "100",
        }
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "server.cli", "memory", "reembed", "--batch-size", "1"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "2 items embedded with fake-embed-12 (12-d)" in done.stdout

        memories = MemoryStore(store)
        await memories.adopt_dimensions(12)
        assert await memories.count_stale("fake-embed-12") == 0
        inputs = [r["input"] for r in embeddings_endpoint.requests if r["model"] == "fake-embed-12"]
        assert sorted(t for batch in inputs for t in batch) == ["hates rain", "loves jazz"]
        if backend == "postgres":
            assert await _column_size(store) == 12
