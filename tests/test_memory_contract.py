"""Contract tests for long-term memory (:mod:`memory.memories`, :mod:`memory.retrieval`).

Run against every database backend of tests/test_store_contract.py
(``STORE_BACKENDS``): the same storage and ranking behaviour on SQLite and
Postgres (pgvector, row-level security live). Embeddings come from a small
deterministic fake that subclasses the real :class:`Embedder` base.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from memory.embeddings.base import Embedder, EmbeddingError, Vector
from memory.memories import MemoryRecord, MemoryStore, NewMemory
from memory.retrieval import Scoring, light_stem, remember, search, tokenize
from memory.store import Store
from tests.test_store_contract import STORE_BACKENDS

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

# -- a fake embedder ------------------------------------------------------------------

# Words of one group mean the same thing to the fake model (its "semantics").
CONCEPTS = {
    "dog": ("dog", "dogs", "puppy", "puppies", "canine", "pup"),
    "pet": ("pet", "pets", "animal", "animals"),
    "name": ("name", "names", "called", "named", "nickname"),
    "job": ("job", "work", "works", "career", "employed", "occupation"),
    "city": ("city", "town", "live", "lives", "living", "moved", "home"),
    "food": ("food", "eat", "eats", "dinner", "meal", "cooking", "cook"),
    "music": ("music", "song", "songs", "guitar", "band", "sing"),
    "sport": ("sport", "run", "running", "marathon", "race", "jog"),
}
_CONCEPT_OF = {w: c for c, words in CONCEPTS.items() for w in words}


class FakeEmbedder(Embedder):
    """Deterministic 384-d vectors: known words by concept, unknown words hashed and faint.

    Like a real small model, it links paraphrases (``puppy`` ~ ``dog``) and
    barely knows rare names or codes (weight 0.05), which keyword search must
    then find.
    """

    name = "fake"
    model = "fake-bow-384"
    dimensions = 384

    def __init__(self) -> None:
        self.calls = 0

    async def _embed_batch(self, texts: list[str]) -> list[Vector]:
        self.calls += 1
        return [self.vector(t) for t in texts]

    @staticmethod
    def vector(text_: str) -> Vector:
        v = [0.0] * 384
        for word in re.findall(r"[a-z0-9]+", text_.lower()):
            concept = _CONCEPT_OF.get(word)
            key, weight = (f"concept:{concept}", 1.0) if concept else (f"word:{word}", 0.05)
            h = hashlib.blake2b(key.encode(), digest_size=8).digest()
            v[int.from_bytes(h[:4], "little") % 384] += weight
        v[383] += 0.01  # never the zero vector
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]


class BrokenEmbedder(FakeEmbedder):
    async def _embed_batch(self, texts: list[str]) -> list[Vector]:
        raise EmbeddingError("down", code="embedding_unavailable")


# -- backends ---------------------------------------------------------------------------


@pytest.fixture(params=list(STORE_BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_BACKENDS[request.param](request, tmp_path) as s:
        yield s


@pytest.fixture
def memories(store: Store) -> MemoryStore:
    return MemoryStore(store)


@dataclass
class Owner:
    tenant: str
    persona: str
    user: str


async def _owner(store: Store, label: str, *, tenant: str | None = None) -> Owner:
    tenant_id = tenant or (await store.create_tenant(f"tenant {label}")).id
    persona = await store.create_persona(tenant_id, slug=f"p-{label}", name=label, data={})
    user = await store.get_or_create_user(tenant_id, f"ext-{label}", label)
    return Owner(tenant_id, persona.id, user.id)


def _item(o: Owner, text_: str, **fields: object) -> NewMemory:
    return NewMemory(persona_id=o.persona, user_id=o.user, text=text_, **fields)  # type: ignore[arg-type]


async def _search(memories: MemoryStore, o: Owner, query: str, **kw: object) -> list[MemoryRecord]:
    found = await search(
        memories,
        FakeEmbedder(),
        o.tenant,
        o.persona,
        o.user,
        query,
        now=NOW,
        **kw,  # type: ignore[arg-type]
    )
    return [s.memory for s in found]


async def _look_count(store: Store, sql: str, **params: object) -> int:
    async with store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT set_config('salon.scope', 'system', true)"))
        return int((await conn.execute(text(sql), params)).scalar_one())


# -- storage ----------------------------------------------------------------------------


async def test_crud(store: Store, memories: MemoryStore) -> None:
    o = await _owner(store, "a")
    vec = FakeEmbedder.vector("likes dogs")
    m = await memories.add(
        o.tenant,
        persona_id=o.persona,
        user_id=o.user,
        text="Likes dogs",
        kind="preference",
        importance=0.8,
        source_message_ids=["msg_1"],
        source_refs=["D1:1"],
        valid_from=datetime(2024, 1, 1, 10, 0, tzinfo=UTC),
        embedding=vec,
        embedding_model="fake-bow-384",
    )
    assert m.id.startswith("mem_") and m.live and m.has_embedding
    got = await memories.get(o.tenant, m.id)
    assert got == m
    assert got.source_message_ids == ("msg_1",) and got.source_refs == ("D1:1",)
    assert got.valid_from == datetime(2024, 1, 1, 10, 0, tzinfo=UTC)
    assert got.to_public()["kind"] == "preference"

    pinned = await memories.update(o.tenant, m.id, pinned=True, importance=0.3)
    assert pinned is not None and pinned.pinned and pinned.importance == 0.3
    assert pinned.has_embedding and pinned.updated_at >= m.updated_at
    # New text without a new vector: the old vector described the old text.
    edited = await memories.update(o.tenant, m.id, text="Loves dogs")
    assert edited is not None and edited.text == "Loves dogs" and not edited.has_embedding
    reembedded = await memories.update(
        o.tenant, m.id, embedding=FakeEmbedder.vector("loves dogs"), embedding_model="fake-bow-384"
    )
    assert reembedded is not None and reembedded.has_embedding

    assert await memories.update(o.tenant, "mem_missing", pinned=True) is None
    assert await memories.delete(o.tenant, m.id) is True
    assert await memories.delete(o.tenant, m.id) is False
    assert await memories.get(o.tenant, m.id) is None

    with pytest.raises(ValueError, match="kind"):
        await memories.add(o.tenant, persona_id=o.persona, user_id=o.user, text="x", kind="gossip")
    with pytest.raises(ValueError, match="importance"):
        await memories.add(o.tenant, persona_id=o.persona, user_id=o.user, text="x", importance=2)
    with pytest.raises(ValueError, match="dimensions"):
        await memories.add(
            o.tenant, persona_id=o.persona, user_id=o.user, text="x", embedding=[1.0, 0.0]
        )
    with pytest.raises(ValueError, match="non-empty"):
        await memories.add(o.tenant, persona_id=o.persona, user_id=o.user, text="  ")


async def test_add_many_and_list_filters(store: Store, memories: MemoryStore) -> None:
    o = await _owner(store, "a")
    other_persona = await store.create_persona(o.tenant, slug="p-b", name="b", data={})
    other_user = await store.get_or_create_user(o.tenant, "ext-b")
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    added = await memories.add_many(
        o.tenant,
        [_item(o, f"turn {i}", kind="turn", valid_from=t0 + timedelta(minutes=i)) for i in range(5)]
        + [
            _item(o, "a pinned fact", pinned=True, valid_from=t0 + timedelta(days=1)),
            NewMemory(persona_id=other_persona.id, user_id=o.user, text="other persona"),
            NewMemory(persona_id=o.persona, user_id=other_user.id, text="other user"),
        ],
    )
    assert [m.text for m in added[:5]] == [f"turn {i}" for i in range(5)]
    assert len({m.id for m in added}) == 8
    assert await memories.add_many(o.tenant, []) == []

    mine = await memories.list(o.tenant, persona_id=o.persona, user_id=o.user)
    assert [m.text for m in mine] == ["a pinned fact"] + [f"turn {i}" for i in range(4, -1, -1)]
    turns = await memories.list(o.tenant, user_id=o.user, kind="turn", limit=2, offset=1)
    assert [m.text for m in turns] == ["turn 3", "turn 2"]
    assert [m.text for m in await memories.list(o.tenant, pinned=True)] == ["a pinned fact"]
    assert {m.text for m in await memories.list(o.tenant, kind=["fact"])} == {
        "a pinned fact",
        "other persona",
        "other user",
    }
    assert [m.text for m in await memories.list(o.tenant, persona_id=other_persona.id)] == [
        "other persona"
    ]
    assert len(await memories.list(o.tenant)) == 8

    # Without valid_from, a batch keeps its order in time (turns stay in sequence).
    batch = await memories.add_many(o.tenant, [_item(o, f"t{i}", kind="turn") for i in range(20)])
    assert [m.valid_from for m in batch] == sorted(m.valid_from for m in batch)
    listed = await memories.list(o.tenant, user_id=o.user, kind="turn", limit=20)
    assert [m.text for m in listed] == [f"t{i}" for i in range(19, -1, -1)]


async def test_list_by_source_ref_is_exact(store: Store, memories: MemoryStore) -> None:
    """One ref among many items: not a prefix of it, not LIKE's wildcards, JSON escapes."""
    o = await _owner(store, "a")
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    refs = ["conversation:c_1", "conversation:c11", "conversation:cX1", 'quote:"a"\\b', "c%"]
    await memories.add_many(
        o.tenant,
        [
            _item(
                o,
                f"item {i}",
                kind="summary",
                source_refs=[r, f"through:{i}"],
                valid_from=t0 + timedelta(minutes=i),
            )
            for i, r in enumerate(refs)
        ]
        + [
            _item(
                o,
                "newer, other",
                kind="summary",
                source_refs=["conversation:c_10"],
                valid_from=t0 + timedelta(days=1),
            )
        ],
    )
    for i, ref in enumerate(refs):
        found = await memories.list(o.tenant, kind="summary", source_ref=ref, limit=1)
        assert [m.text for m in found] == [f"item {i}"], ref
    assert await memories.list(o.tenant, source_ref="conversation:c") == []
    assert await memories.list(o.tenant, source_ref="conversation:c_") == []
    other = await _owner(store, "b")
    assert await memories.list(other.tenant, source_ref=refs[0]) == []

    # The per-reply lookup: the store's direct path where it has one, and without it.
    direct = store.direct
    for path in ("direct", "sessions"):
        store._direct = direct if path == "direct" else None
        for i, ref in enumerate(refs):
            found = await memories.live_summary(o.tenant, o.persona, o.user, ref)
            assert found is not None and found.text == f"item {i}", (path, ref)
            assert found == (await memories.list(o.tenant, source_ref=ref))[0]
        assert await memories.live_summary(o.tenant, o.persona, o.user, "conversation:c") is None
        assert await memories.live_summary(other.tenant, o.persona, o.user, refs[0]) is None
        assert await memories.live_summary(o.tenant, o.persona, other.user, refs[0]) is None
    store._direct = direct
    assert direct is not None  # both backends of this suite have one
    # A superseded summary is history, not the live one.
    first = (await memories.list(o.tenant, source_ref=refs[0]))[0]
    await memories.supersede(o.tenant, first.id, text="item 0, v2", source_refs=[refs[0]])
    live = await memories.live_summary(o.tenant, o.persona, o.user, refs[0])
    assert live is not None and live.text == "item 0, v2"


async def test_tenant_isolation(store: Store, memories: MemoryStore) -> None:
    a = await _owner(store, "a")
    b = await _owner(store, "b")
    ma = await memories.add(
        a.tenant,
        persona_id=a.persona,
        user_id=a.user,
        text="A's secret: the vault code is 1234",
        embedding=FakeEmbedder.vector("secret vault code"),
    )
    mb = await memories.add(b.tenant, persona_id=b.persona, user_id=b.user, text="B's note")

    # Another tenant sees nothing, even with the right persona and user ids.
    assert await memories.get(b.tenant, ma.id) is None
    assert [m.id for m in await memories.list(b.tenant)] == [mb.id]
    assert await memories.list(b.tenant, persona_id=a.persona, user_id=a.user) == []
    assert await memories.update(b.tenant, ma.id, text="hijacked") is None
    assert await memories.delete(b.tenant, ma.id) is False
    assert await memories.supersede(b.tenant, ma.id, text="hijacked") is None
    assert await memories.delete_for_user(b.tenant, a.user) == 0
    assert await _search(memories, Owner(b.tenant, a.persona, a.user), "vault code secret") == []
    assert (
        await memories.nearest(
            b.tenant, a.persona, a.user, FakeEmbedder.vector("secret vault code"), limit=5
        )
        == []
    )
    assert await memories.get(a.tenant, ma.id) == ma

    if store.engine.dialect.name == "postgresql":
        # Row-level security: a raw connection sees no memory without a tenant
        # setting, and only its own tenant's with one.
        async with store.engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM memories"))).scalar_one() == 0
            await conn.execute(
                text("SELECT set_config('salon.tenant_id', :t, true)"), {"t": b.tenant}
            )
            ids = (await conn.execute(text("SELECT id FROM memories"))).scalars().all()
            assert ids == [mb.id]
        with pytest.raises(Exception, match="row-level security"):
            async with store._tx(b.tenant) as s:
                await s.execute(
                    text(
                        "INSERT INTO memories (id, tenant_id, persona_id, user_id, kind, text,"
                        " importance, pinned, source_message_ids, source_refs, valid_from,"
                        " created_at, updated_at) VALUES ('mem_x', :t, :p, :u, 'fact', 'x', 0.5,"
                        " false, '[]', '[]', now(), now(), now())"
                    ),
                    {"t": a.tenant, "p": a.persona, "u": a.user},
                )


async def test_supersede_keeps_history(store: Store, memories: MemoryStore) -> None:
    o = await _owner(store, "a")
    old = await memories.add(
        o.tenant,
        persona_id=o.persona,
        user_id=o.user,
        text="Lives in Lisbon",
        importance=0.9,
        pinned=True,
        embedding=FakeEmbedder.vector("Lives in Lisbon"),
    )
    when = datetime(2025, 3, 1, tzinfo=UTC)
    new = await memories.supersede(
        o.tenant,
        old.id,
        text="Lives in Porto",
        source_message_ids=["msg_9"],
        valid_from=when,
        embedding=FakeEmbedder.vector("Lives in Porto"),
    )
    assert new is not None and new.live and new.text == "Lives in Porto"
    assert (new.kind, new.importance, new.pinned) == ("fact", 0.9, True)  # inherited
    assert new.valid_from == when and new.source_message_ids == ("msg_9",)
    retired = await memories.get(o.tenant, old.id)
    assert retired is not None and not retired.live
    assert retired.valid_to == when and retired.superseded_by == new.id

    assert [m.id for m in await memories.list(o.tenant, user_id=o.user)] == [new.id]
    history = await memories.list(o.tenant, user_id=o.user, include_superseded=True)
    assert {m.id for m in history} == {old.id, new.id}
    # Retrieval never returns a superseded fact, pinned or not.
    found = await _search(memories, o, "Where does she live? Lisbon")
    assert [m.id for m in found] == [new.id]

    # Superseding an outdated version chains onto the current one.
    newer = await memories.supersede(o.tenant, old.id, text="Lives in Faro")
    assert newer is not None
    middle = await memories.get(o.tenant, new.id)
    assert middle is not None and middle.superseded_by == newer.id
    assert [m.id for m in await memories.list(o.tenant, user_id=o.user)] == [newer.id]
    assert await memories.supersede(o.tenant, "mem_missing", text="x") is None


async def test_concurrent_supersede_leaves_one_live_version(
    store: Store, memories: MemoryStore
) -> None:
    o = await _owner(store, "a")
    old = await memories.add(o.tenant, persona_id=o.persona, user_id=o.user, text="Works at A")
    results = await asyncio.gather(
        *(memories.supersede(o.tenant, old.id, text=f"Works at {c}") for c in "BCD")
    )
    assert all(r is not None for r in results)
    live = await memories.list(o.tenant, user_id=o.user)
    assert len(live) == 1
    everything = await memories.list(o.tenant, user_id=o.user, include_superseded=True)
    assert len(everything) == 4
    # One chain: every retired version points at a distinct successor.
    successors = [m.superseded_by for m in everything if not m.live]
    assert len(successors) == 3 and len(set(successors)) == 3


async def test_delete_for_user(store: Store, memories: MemoryStore) -> None:
    o = await _owner(store, "a")
    keep = await _owner(store, "b", tenant=o.tenant)
    second_persona = await store.create_persona(o.tenant, slug="p-2", name="2", data={})
    await memories.add_many(
        o.tenant,
        [_item(o, f"fact {i}", embedding=FakeEmbedder.vector(f"fact {i}")) for i in range(3)]
        + [NewMemory(persona_id=second_persona.id, user_id=o.user, text="with persona 2")]
        + [_item(keep, "someone else's")],
    )
    first = (await memories.list(o.tenant, user_id=o.user))[0]
    await memories.supersede(o.tenant, first.id, text="fact 0 v2")

    assert await memories.delete_for_user(o.tenant, o.user) == 5
    assert await memories.list(o.tenant, user_id=o.user, include_superseded=True) == []
    assert [m.text for m in await memories.list(o.tenant)] == ["someone else's"]
    assert (
        await _look_count(store, "SELECT count(*) FROM memories WHERE user_id = :u", u=o.user) == 0
    )
    assert await memories.delete_for_user(o.tenant, o.user) == 0

    # Deleting the user row itself cascades to its memories.
    await memories.add(o.tenant, persona_id=keep.persona, user_id=keep.user, text="another")
    async with store._tx(o.tenant) as s:
        await s.execute(text("DELETE FROM users WHERE id = :u"), {"u": keep.user})
    assert await memories.list(o.tenant) == []


async def test_remember_embeds_in_batches_and_survives_a_broken_embedder(
    store: Store, memories: MemoryStore
) -> None:
    o = await _owner(store, "a")
    embedder = FakeEmbedder()
    embedder.batch_size = 4
    given = FakeEmbedder.vector("given")
    items = [_item(o, f"note number {i} " + "x" * (i % 3)) for i in range(9)]
    items.append(_item(o, "already embedded", embedding=given))
    stored = await remember(memories, embedder, o.tenant, items)
    assert [m.text for m in stored] == [i.text for i in items]  # input order kept
    assert all(m.has_embedding for m in stored)
    assert {m.embedding_model for m in stored[:9]} == {"fake-bow-384"}
    assert embedder.calls == 3  # 9 texts in batches of 4
    near = await memories.nearest(o.tenant, o.persona, o.user, given, limit=1)
    assert near[0][0] == stored[-1].id and near[0][1] == pytest.approx(1.0, abs=1e-5)

    fallback = await remember(memories, BrokenEmbedder(), o.tenant, [_item(o, "kept anyway")])
    assert not fallback[0].has_embedding
    found = await search(
        memories, BrokenEmbedder(), o.tenant, o.persona, o.user, "kept anyway", now=NOW
    )
    assert [s.memory.id for s in found][:1] == [fallback[0].id]  # keywords still work


# -- retrieval --------------------------------------------------------------------------

CORPUS = [
    "I adopted a dog from the shelter last spring",
    "My favourite food is spicy ramen",
    "Biscuit is the one who chews my shoes",
    "People called me Annie at school",
    "My nickname at work is Doc",
    "I moved to Porto for my new job",
    "I play guitar in a small band",
    "Training for the Berlin marathon in September",
    "My sister works as a nurse",
    "We cook dinner together on Sundays",
]


async def _corpus(memories: MemoryStore, o: Owner, **fields: object) -> list[MemoryRecord]:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    return await remember(
        memories,
        FakeEmbedder(),
        o.tenant,
        [
            _item(o, t, valid_from=t0 + timedelta(days=i), id=f"mem_c{i:02d}", **fields)
            for i, t in enumerate(CORPUS)
        ],
    )


async def test_search_finds_keywords_and_paraphrases(store: Store, memories: MemoryStore) -> None:
    o = await _owner(store, "a")
    await _corpus(memories, o)
    # Paraphrase: no word in common, only the embedder links puppy ~ dog.
    assert (await _search(memories, o, "Does she have a puppy?"))[0].text == CORPUS[0]
    # Keyword: a rare name the embedder barely knows, next to a word ("name")
    # whose synonyms pull the vector ranking toward other items.
    assert (await _search(memories, o, "what name is Biscuit"))[0].text == CORPUS[2]
    # A code-like token only keywords can match.
    assert (await _search(memories, o, "Berlin"))[0].text == CORPUS[7]
    # Both agree.
    assert (await _search(memories, o, "which city did she move to for her job"))[0].text == (
        CORPUS[5]
    )
    # Without an embedder the ranking is keywords alone.
    only_kw = await search(memories, None, o.tenant, o.persona, o.user, "ramen", now=NOW)
    assert [s.memory.text for s in only_kw] == [CORPUS[1]]
    assert only_kw[0].vector_rank is None and only_kw[0].keyword_rank == 1


async def test_search_scopes_pins_kinds_and_budget(store: Store, memories: MemoryStore) -> None:
    o = await _owner(store, "a")
    other_user = await _owner(store, "b", tenant=o.tenant)
    corpus = await _corpus(memories, o)
    await memories.add(
        o.tenant,
        persona_id=o.persona,
        user_id=other_user.user,
        text="I adopted a dog too",
        embedding=FakeEmbedder.vector("I adopted a dog too"),
    )
    pin = await memories.add(
        o.tenant,
        persona_id=o.persona,
        user_id=o.user,
        text="Always address her as Dr. Reyes",
        kind="preference",
        pinned=True,
    )
    found = await search(memories, FakeEmbedder(), o.tenant, o.persona, o.user, "dog", k=3, now=NOW)
    # Pinned first (unrelated to the query, outside k), then the best k.
    assert found[0].memory.id == pin.id
    assert found[1].memory.text == CORPUS[0]
    assert len(found) == 4
    assert all(s.memory.user_id == o.user for s in found)
    assert found[1].vector_rank == 1 and found[1].keyword_rank == 1
    assert found[1].score > found[2].score >= found[3].score

    no_pins = await search(
        memories, FakeEmbedder(), o.tenant, o.persona, o.user, "dog", include_pinned=False
    )
    assert pin.id not in {s.memory.id for s in no_pins}
    facts_only = await search(
        memories, FakeEmbedder(), o.tenant, o.persona, o.user, "dog", kinds=["preference"]
    )
    assert [s.memory.id for s in facts_only] == [pin.id]

    # The budget is respected, pinned first; an item that does not fit is skipped.
    def words(t: str) -> int:
        return len(t.split())

    def run(budget: int | None) -> object:
        return search(
            memories,
            FakeEmbedder(),
            o.tenant,
            o.persona,
            o.user,
            "food dinner ramen",
            k=10,
            token_budget=budget,
            count_tokens=words,
            now=NOW,
        )

    unlimited = await run(None)  # type: ignore[misc]
    budgeted = await run(14)  # type: ignore[misc]
    assert sum(s.tokens for s in budgeted) <= 14
    assert budgeted[0].memory.id == pin.id and budgeted[0].tokens == 6
    # Greedy in rank order: what does not fit is skipped, smaller ones after it still go in.
    expected, used = [], 0
    for s in unlimited:
        if used + s.tokens <= 14:
            expected.append(s.memory.id)
            used += s.tokens
    assert [s.memory.id for s in budgeted] == expected
    assert len(budgeted) < len(unlimited)
    tiny = await search(
        memories, FakeEmbedder(), o.tenant, o.persona, o.user, "dog", token_budget=1
    )
    assert tiny == []
    assert corpus[0].id == "mem_c00"


async def test_search_prefers_recent_and_important_on_ties(
    store: Store, memories: MemoryStore
) -> None:
    o = await _owner(store, "a")
    t0 = NOW - timedelta(days=400)
    await memories.add_many(
        o.tenant,
        [
            _item(o, "Went hiking", valid_from=t0, id="mem_old"),
            _item(o, "Went hiking", valid_from=NOW - timedelta(days=1), id="mem_new"),
            _item(o, "Went hiking", valid_from=t0, importance=1.0, id="mem_important"),
        ],
    )
    found = await search(memories, None, o.tenant, o.persona, o.user, "hiking", now=NOW)
    assert [s.memory.id for s in found] == ["mem_important", "mem_new", "mem_old"]


async def test_neighbouring_turns_are_lifted(store: Store, memories: MemoryStore) -> None:
    o = await _owner(store, "a")
    t0 = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)
    turns = [
        "Persona: what did you do at the weekend?",
        "User: We drove up to the lake cabin",
        "Persona: sounds lovely",
        "User: unrelated chatter about the weather",
    ]
    await memories.add_many(
        o.tenant,
        [
            _item(o, t, kind="turn", valid_from=t0 + timedelta(seconds=i), id=f"mem_t{i}")
            for i, t in enumerate(turns)
        ]
        # Same words as turn 0, but a day later: not part of that exchange.
        + [_item(o, "chatter", kind="turn", valid_from=t0 + timedelta(days=1), id="mem_t9")],
    )
    found = await search(
        memories, None, o.tenant, o.persona, o.user, "what did they do at the weekend?", now=NOW
    )
    ids = [s.memory.id for s in found]
    # The answer (turn 1) comes right after the matching question (turn 0).
    assert ids[:2] == ["mem_t0", "mem_t1"]
    assert "mem_t9" not in ids
    flat = await search(
        memories,
        None,
        o.tenant,
        o.persona,
        o.user,
        "what did they do at the weekend?",
        now=NOW,
        scoring=Scoring(neighbour_weight=0.0),
    )
    assert [s.memory.id for s in flat] == ["mem_t0"]


async def test_same_ranking_on_both_backends(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    queries = [
        "Does she have a puppy?",
        "what name is Biscuit",
        "music band guitar",
        "food",
        "who works where",
        "marathon training",
    ]
    rankings: dict[str, list[list[tuple[str, float | None]]]] = {}
    for backend, factory in STORE_BACKENDS.items():
        (tmp_path / backend).mkdir()
        async with factory(request, tmp_path / backend) as store:
            memories = MemoryStore(store)
            o = await _owner(store, "a")
            await _corpus(memories, o, kind="turn")
            rankings[backend] = []
            for q in queries:
                found = await search(
                    memories, FakeEmbedder(), o.tenant, o.persona, o.user, q, k=5, now=NOW
                )
                rankings[backend].append([(s.memory.id, s.vector_similarity) for s in found])
            for exact in (True, False):  # on Postgres: all scored, or the HNSW query
                near = await memories.nearest(
                    o.tenant,
                    o.persona,
                    o.user,
                    FakeEmbedder.vector("dog food"),
                    limit=10,
                    exact=exact,
                )
                rankings[backend].append([(mid, sim) for mid, sim in near])
    first, *others = rankings.values()
    for other in others:
        assert [[mid for mid, _ in r] for r in other] == [[mid for mid, _ in r] for r in first]
        for r1, r2 in zip(first, other, strict=True):
            for (_, s1), (_, s2) in zip(r1, r2, strict=True):
                assert (s1 is None) == (s2 is None)
                if s1 is not None and s2 is not None:
                    assert s1 == pytest.approx(s2, abs=1e-5)
    assert all(len(r) == 5 for r in first[:-2])
    assert first[-1] == first[-2] and len(first[-1]) == 10


def test_tokenizer() -> None:
    assert tokenize("The puppies were Running to the parks!") == ("puppy", "wer", "run", "park")
    assert [light_stem(w) for w in ("paints", "painted", "painting", "class", "bus")] == [
        "paint",
        "paint",
        "paint",
        "class",
        "bus",
    ]
