"""Contract tests for :class:`memory.store.Store`, run against every database backend.

Each test takes the ``store`` fixture: a fresh, migrated Store on one backend.
A backend is one entry in ``STORE_BACKENDS``; every test here then runs on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from memory.db import create_engine, normalize_database_url
from memory.migrate import alembic_config, current_revision, migrate
from memory.records import (
    ConversationRecord,
    MessageRecord,
    PersonaRecord,
    TenantRecord,
    UserRecord,
)
from memory.schema import metadata
from memory.store import Conflict, Store

# -- backends -----------------------------------------------------------------


@asynccontextmanager
async def _sqlite_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    engine = create_engine(normalize_database_url(None, tmp_path))
    await migrate(engine)
    store = Store(engine)
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def _postgres_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    # A fresh database per test, as the non-superuser app role, so row-level
    # security is live for every contract test (tests/services_pg.py).
    url: str = request.getfixturevalue("postgres_url")
    engine = create_engine(normalize_database_url(url, tmp_path))
    await migrate(engine)
    store = Store(engine)
    try:
        yield store
    finally:
        await store.close()


# One entry per database backend: a factory that migrates a fresh database and
# yields a Store on it. Every test below runs against each of them.
STORE_BACKENDS: dict[
    str, Callable[[pytest.FixtureRequest, Path], AbstractAsyncContextManager[Store]]
] = {
    "sqlite": _sqlite_store,
    "postgres": _postgres_store,
}


@pytest.fixture(params=list(STORE_BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_BACKENDS[request.param](request, tmp_path) as s:
        yield s


# -- helpers --------------------------------------------------------------------


def _uid(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def _look_under(store: Store) -> AsyncIterator[AsyncConnection]:
    """A plain connection that sees every row, to check what the Store really wrote.

    On Postgres it opts in to the system scope for its (implicit) transaction;
    otherwise row-level security would hide every tenant-owned row from it.
    """
    async with store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT set_config('salon.scope', 'system', true)"))
        yield conn


async def _scalar(store: Store, sql: str, **params: Any) -> Any:
    async with _look_under(store) as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


async def _rows(store: Store, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with _look_under(store) as conn:
        return [dict(r._mapping) for r in (await conn.execute(text(sql), params))]


@dataclass
class World:
    """One tenant with a persona, a user, a conversation and a few messages."""

    tenant: TenantRecord
    persona: PersonaRecord
    user: UserRecord
    conv: ConversationRecord
    messages: list[MessageRecord]


async def _world(store: Store, label: str, *, slug: str | None = None) -> World:
    tenant = await store.create_tenant(f"tenant {label}")
    persona = await store.create_persona(
        tenant.id, slug=slug or f"persona-{label}", name=f"Persona {label}", data={"l": label}
    )
    user = await store.get_or_create_user(tenant.id, f"ext-{label}", f"User {label}")
    conv = await store.create_conversation(tenant.id, persona_id=persona.id, user_id=user.id)
    messages = []
    for i in range(3):
        msg, created = await store.add_message(
            tenant.id, conv.id, role="user", content=f"{label} {i}", client_id=f"c{i}"
        )
        assert created
        messages.append(msg)
    return World(tenant, persona, user, conv, messages)


# -- migrations -----------------------------------------------------------------


def _schema(conn: Connection) -> dict[str, dict[str, Any]]:
    insp = inspect(conn)
    out: dict[str, dict[str, Any]] = {}
    for table in insp.get_table_names():
        if table == "alembic_version":
            continue
        out[table] = {
            "columns": {c["name"]: bool(c["nullable"]) for c in insp.get_columns(table)},
            "pk": set(insp.get_pk_constraint(table)["constrained_columns"]),
            "uniques": {tuple(u["column_names"]) for u in insp.get_unique_constraints(table)},
            "indexes": {
                (i["name"], tuple(i["column_names"]))
                for i in insp.get_indexes(table)
                if not i.get("unique") and "duplicates_constraint" not in i
            },
            "fks": {
                (
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    (f.get("options", {}).get("ondelete") or "").upper(),
                )
                for f in insp.get_foreign_keys(table)
            },
        }
    return out


def _model_schema() -> dict[str, dict[str, Any]]:
    from sqlalchemy import ForeignKeyConstraint, UniqueConstraint

    out: dict[str, dict[str, Any]] = {}
    for name, table in metadata.tables.items():
        uniques = {
            tuple(c.name for c in con.columns)
            for con in table.constraints
            if isinstance(con, UniqueConstraint)
        }
        uniques |= {(c.name,) for c in table.columns if c.unique}
        out[name] = {
            "columns": {c.name: bool(c.nullable) for c in table.columns},
            "pk": {c.name for c in table.primary_key.columns},
            "uniques": uniques,
            "indexes": {
                (i.name, tuple(c.name for c in i.columns)) for i in table.indexes if not i.unique
            },
            "fks": {
                (
                    tuple(c.name for c in con.columns),
                    con.referred_table.name,
                    (con.ondelete or "").upper(),
                )
                for con in table.constraints
                if isinstance(con, ForeignKeyConstraint)
            },
        }
    return out


async def test_migrations_are_idempotent(store: Store) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    assert await current_revision(store.engine) == head
    tenant = await store.create_tenant("survives a re-run")

    await migrate(store.engine)  # second run: a no-op, not an error
    await migrate(store.engine)

    assert await current_revision(store.engine) == head
    assert [t.id for t in await store.list_tenants()] == [tenant.id]
    assert await _scalar(store, "SELECT count(*) FROM alembic_version") == 1


async def test_migrated_schema_matches_models(store: Store) -> None:
    async with store.engine.connect() as conn:
        actual = await conn.run_sync(_schema)
    expected = _model_schema()

    assert set(actual) == set(expected)
    for table, want in expected.items():
        got = actual[table]
        assert set(got["columns"]) == set(want["columns"]), table
        assert got["columns"] == want["columns"], f"nullability differs in {table}"
        assert got["pk"] == want["pk"], table
        assert got["uniques"] == want["uniques"], table
        assert got["indexes"] == want["indexes"], table
        assert got["fks"] == want["fks"], table


# -- tenants, keys, secrets -------------------------------------------------------


async def test_tenants_create_list_count(store: Store) -> None:
    assert await store.count_tenants() == 0
    assert await store.list_tenants() == []

    a = await store.create_tenant("Acme")
    b = await store.create_tenant("Globex", tenant_id="ten_explicit")

    assert a.name == "Acme" and a.id.startswith("ten_")
    assert b == TenantRecord(id="ten_explicit", name="Globex")
    assert await store.count_tenants() == 2
    assert await store.list_tenants() == [a, b]  # creation order
    assert await store.get_tenant("ten_explicit") == b
    assert await store.get_tenant("ten_missing") is None


async def test_explicit_tenant_id_conflict(store: Store) -> None:
    await store.create_tenant("first", tenant_id="ten_same")
    with pytest.raises(Conflict):
        await store.create_tenant("second", tenant_id="ten_same")
    assert await store.count_tenants() == 1
    assert await store.list_tenants() == [TenantRecord(id="ten_same", name="first")]


async def test_api_key_plaintext_is_never_stored(store: Store) -> None:
    tenant = await store.create_tenant("t")
    record, plaintext = await store.create_api_key(tenant.id, "ci", role="admin")
    _, explicit = await store.create_api_key(tenant.id, "explicit", key="sk_salon_" + "z" * 43)

    assert plaintext.startswith("sk_salon_") and len(plaintext) == len("sk_salon_") + 43
    assert record.prefix == plaintext[:12]
    assert explicit == "sk_salon_" + "z" * 43

    rows = await _rows(store, "SELECT * FROM api_keys")
    assert len(rows) == 2
    by_id = {r["id"]: r for r in rows}
    assert by_id[record.id]["key_hash"] == hashlib.sha256(plaintext.encode()).hexdigest()
    for key in (plaintext, explicit):
        secret_part = key[12:]  # everything after the displayed prefix
        for row in rows:
            for column, value in row.items():
                assert secret_part not in str(value), f"key material stored in {column}"


async def test_find_api_key(store: Store) -> None:
    a = await store.create_tenant("a")
    b = await store.create_tenant("b")
    rec_a, key_a = await store.create_api_key(a.id, "a-key", role="admin")
    rec_b, key_b = await store.create_api_key(b.id, "b-key", role="member")

    found_a = await store.find_api_key(key_a)
    found_b = await store.find_api_key(key_b)
    assert found_a == rec_a and found_a is not None and found_a.tenant_id == a.id
    assert found_b == rec_b and found_b is not None
    assert (found_b.tenant_id, found_b.role, found_b.name) == (b.id, "member", "b-key")

    assert await store.find_api_key(key_a + "x") is None
    assert await store.find_api_key(key_a[:-1]) is None
    assert await store.find_api_key("sk_salon_" + "0" * 43) is None
    assert await store.find_api_key("") is None
    # The stored hash is not itself a credential.
    assert await store.find_api_key(hashlib.sha256(key_a.encode()).hexdigest()) is None


async def test_get_or_create_secret_is_stable(store: Store) -> None:
    first = await store.get_or_create_secret("session")
    assert len(first) >= 32
    assert await store.get_or_create_secret("session") == first
    other = await store.get_or_create_secret("other")
    assert other != first
    # Another Store on the same database (another replica) reads the same value.
    assert await Store(store.engine).get_or_create_secret("session") == first
    assert await _scalar(store, "SELECT count(*) FROM server_secrets") == 2


async def test_get_or_create_secret_concurrently(store: Store) -> None:
    values = await asyncio.gather(*(store.get_or_create_secret("race") for _ in range(10)))
    assert len(set(values)) == 1
    assert await store.get_or_create_secret("race") == values[0]


# -- personas ---------------------------------------------------------------------


async def test_persona_crud(store: Store) -> None:
    tenant = await store.create_tenant("t")
    data = {"description": "Mathematician", "nested": {"list": [1, "two", None]}, "ü": "ok"}
    ada = await store.create_persona(tenant.id, slug="ada", name="Ada", data=data)
    bob = await store.create_persona(tenant.id, slug="bob", name="Bob", data={})

    assert ada.id.startswith("per_") and ada.tenant_id == tenant.id
    assert (ada.slug, ada.name, ada.data) == ("ada", "Ada", data)
    assert ada.created_at.tzinfo is not None

    by_id = await store.get_persona(tenant.id, ada.id)
    by_slug = await store.get_persona(tenant.id, "ada")
    assert by_id is not None and by_slug is not None
    assert by_id.id == by_slug.id == ada.id
    assert by_id.data == data
    assert await store.get_persona(tenant.id, "nobody") is None
    assert [p.id for p in await store.list_personas(tenant.id)] == [ada.id, bob.id]

    updated = await store.update_persona(
        tenant.id, ada.id, slug="ada-l", name="Ada L.", data={"v": 2}
    )
    assert updated is not None
    assert (updated.id, updated.slug, updated.name, updated.data) == (
        ada.id,
        "ada-l",
        "Ada L.",
        {"v": 2},
    )
    assert updated.updated_at >= ada.updated_at
    assert await store.get_persona(tenant.id, "ada") is None
    again = await store.get_persona(tenant.id, "ada-l")
    assert again is not None and (again.name, again.data) == ("Ada L.", {"v": 2})

    missing = await store.update_persona(tenant.id, "per_missing", slug="s", name="n", data={})
    assert missing is None

    assert await store.delete_persona(tenant.id, ada.id) is True
    assert await store.delete_persona(tenant.id, ada.id) is False
    assert await store.get_persona(tenant.id, ada.id) is None
    assert [p.id for p in await store.list_personas(tenant.id)] == [bob.id]


async def test_persona_slug_conflicts_within_a_tenant_only(store: Store) -> None:
    t1 = await store.create_tenant("one")
    t2 = await store.create_tenant("two")
    ada = await store.create_persona(t1.id, slug="ada", name="Ada", data={})
    bob = await store.create_persona(t1.id, slug="bob", name="Bob", data={"keep": True})

    with pytest.raises(Conflict):
        await store.create_persona(t1.id, slug="ada", name="Another Ada", data={})
    with pytest.raises(Conflict):
        await store.update_persona(t1.id, bob.id, slug="ada", name="Bob", data={})
    # The failed update changed nothing.
    bob_now = await store.get_persona(t1.id, bob.id)
    assert bob_now is not None and (bob_now.slug, bob_now.data) == ("bob", {"keep": True})
    assert len(await store.list_personas(t1.id)) == 2

    other = await store.create_persona(t2.id, slug="ada", name="Ada in two", data={})
    assert other.id != ada.id
    found1 = await store.get_persona(t1.id, "ada")
    found2 = await store.get_persona(t2.id, "ada")
    assert found1 is not None and found1.id == ada.id
    assert found2 is not None and found2.id == other.id


# -- tenant isolation --------------------------------------------------------------


async def test_tenant_isolation(store: Store) -> None:
    a = await _world(store, "a", slug="only-in-a")
    b = await _world(store, "b")
    # The same slug and external user id exist in both tenants, as separate rows.
    shared_a = await store.create_persona(a.tenant.id, slug="shared", name="A's", data={})
    shared_b = await store.create_persona(b.tenant.id, slug="shared", name="B's", data={})
    for world, other in ((a, b), (b, a)):
        t = other.tenant.id  # the caller's tenant; `world` holds the other tenant's rows

        # personas
        assert await store.get_persona(t, world.persona.id) is None
        assert await store.get_persona(t, world.persona.slug) is None
        listed = {p.id for p in await store.list_personas(t)}
        assert world.persona.id not in listed and other.persona.id in listed
        assert (
            await store.update_persona(t, world.persona.id, slug="hijack", name="x", data={})
            is None
        )
        assert await store.delete_persona(t, world.persona.id) is False

        # users
        assert await store.get_user(t, world.user.id) is None
        same_ext = await store.get_or_create_user(t, world.user.external_id)
        assert same_ext.id != world.user.id and same_ext.tenant_id == t

        # conversations
        assert await store.get_conversation(t, world.conv.id) is None
        assert (
            await store.latest_conversation(
                t, persona_id=world.persona.id, user_id=world.user.id, channel="ws"
            )
            is None
        )
        await store.record_last_seq(t, world.conv.id, 999)

        # messages
        assert await store.list_messages(t, world.conv.id) == []
        assert await store.list_messages(t, world.conv.id, before=world.messages[-1].id) == []
        for msg in world.messages:
            assert await store.find_client_message(t, world.conv.id, msg.client_id or "") is None
        # A foreign message id as `before` does not reveal or leak anything.
        own = await store.list_messages(t, other.conv.id, before=world.messages[-1].id)
        assert {m.tenant_id for m in own} == {t}

    # Shared slug resolves to each tenant's own persona.
    got_a = await store.get_persona(a.tenant.id, "shared")
    got_b = await store.get_persona(b.tenant.id, "shared")
    assert got_a is not None and got_a.id == shared_a.id
    assert got_b is not None and got_b.id == shared_b.id

    # Nothing of either tenant was changed by the other's attempts.
    for world in (a, b):
        t = world.tenant.id
        persona = await store.get_persona(t, world.persona.id)
        assert persona == world.persona
        assert await store.get_user(t, world.user.id) == world.user
        conv = await store.get_conversation(t, world.conv.id)
        assert conv is not None and conv.last_seq == 0
        assert [m.id for m in await store.list_messages(t, world.conv.id)] == [
            m.id for m in world.messages
        ]
        for msg in world.messages:
            found = await store.find_client_message(t, world.conv.id, msg.client_id or "")
            assert found is not None and found.id == msg.id


# -- users ----------------------------------------------------------------------


async def test_get_or_create_user_is_idempotent(store: Store) -> None:
    t = await store.create_tenant("t")
    first = await store.get_or_create_user(t.id, "ext-1", "Ann")
    again = await store.get_or_create_user(t.id, "ext-1")
    assert again.id == first.id
    assert (first.tenant_id, first.external_id, first.name) == (t.id, "ext-1", "Ann")
    assert again.name == "Ann"  # no name given: the stored one is kept

    renamed = await store.get_or_create_user(t.id, "ext-1", "Annie")
    assert renamed.id == first.id and renamed.name == "Annie"
    stored = await store.get_user(t.id, first.id)
    assert stored is not None and stored.name == "Annie"

    other = await store.get_or_create_user(t.id, "ext-2")
    assert other.id != first.id and other.name is None
    assert await _scalar(store, "SELECT count(*) FROM users") == 2
    assert await store.get_user(t.id, "usr_missing") is None


async def test_concurrent_get_or_create_user_yields_one_user(store: Store) -> None:
    t = await store.create_tenant("t")
    users = await asyncio.gather(
        *(store.get_or_create_user(t.id, "racer") for _ in range(10)), return_exceptions=True
    )
    errors = [u for u in users if isinstance(u, BaseException)]
    assert errors == []
    assert len({u.id for u in users if isinstance(u, UserRecord)}) == 1
    count = await _scalar(store, "SELECT count(*) FROM users WHERE external_id = :e", e="racer")
    assert count == 1


# -- conversations -----------------------------------------------------------------


async def test_conversations(store: Store) -> None:
    t = await store.create_tenant("t")
    p = await store.create_persona(t.id, slug="p", name="P", data={})
    q = await store.create_persona(t.id, slug="q", name="Q", data={})
    u = await store.get_or_create_user(t.id, "u")
    v = await store.get_or_create_user(t.id, "v")

    assert (
        await store.latest_conversation(t.id, persona_id=p.id, user_id=u.id, channel="ws") is None
    )

    first = await store.create_conversation(t.id, persona_id=p.id, user_id=u.id)
    assert first.id.startswith("conv_")
    assert (first.tenant_id, first.persona_id, first.user_id) == (t.id, p.id, u.id)
    assert (first.channel, first.last_seq) == ("ws", 0)
    assert first.created_at.tzinfo is not None
    assert await store.get_conversation(t.id, first.id) == first
    assert await store.get_conversation(t.id, "conv_missing") is None

    second = await store.create_conversation(t.id, persona_id=p.id, user_id=u.id)
    third = await store.create_conversation(t.id, persona_id=p.id, user_id=u.id)
    # Newer conversations on other channels / personas / users do not count.
    http = await store.create_conversation(t.id, persona_id=p.id, user_id=u.id, channel="http")
    await store.create_conversation(t.id, persona_id=q.id, user_id=u.id)
    await store.create_conversation(t.id, persona_id=p.id, user_id=v.id)

    latest = await store.latest_conversation(t.id, persona_id=p.id, user_id=u.id, channel="ws")
    assert latest is not None and latest.id == third.id
    assert second.id != third.id
    latest_http = await store.latest_conversation(
        t.id, persona_id=p.id, user_id=u.id, channel="http"
    )
    assert latest_http is not None and latest_http.id == http.id


async def test_record_last_seq_only_raises(store: Store) -> None:
    w = await _world(store, "a")
    t, cid = w.tenant.id, w.conv.id

    async def last_seq() -> int:
        conv = await store.get_conversation(t, cid)
        assert conv is not None
        return conv.last_seq

    await store.record_last_seq(t, cid, 5)
    assert await last_seq() == 5
    await store.record_last_seq(t, cid, 3)
    assert await last_seq() == 5
    await store.record_last_seq(t, cid, 5)
    assert await last_seq() == 5
    await store.record_last_seq(t, cid, 42)
    assert await last_seq() == 42
    await store.record_last_seq(t, cid, 0)
    assert await last_seq() == 42


# -- messages ---------------------------------------------------------------------


async def _conversation(store: Store) -> tuple[str, str]:
    t = await store.create_tenant("t")
    p = await store.create_persona(t.id, slug="p", name="P", data={})
    u = await store.get_or_create_user(t.id, "u")
    c = await store.create_conversation(t.id, persona_id=p.id, user_id=u.id)
    return t.id, c.id


async def _message_count(store: Store, conversation_id: str) -> int:
    return int(
        await _scalar(
            store, "SELECT count(*) FROM messages WHERE conversation_id = :c", c=conversation_id
        )
    )


async def test_add_message_with_client_id_is_idempotent(store: Store) -> None:
    t, cid = await _conversation(store)
    first, created = await store.add_message(t, cid, role="user", content="hi", client_id="m-1")
    assert created is True
    assert (first.tenant_id, first.conversation_id, first.role, first.content) == (
        t,
        cid,
        "user",
        "hi",
    )
    assert (first.client_id, first.status) == ("m-1", "complete")

    again, created_again = await store.add_message(
        t, cid, role="user", content="hi (retry with other text)", client_id="m-1"
    )
    assert created_again is False
    assert again.id == first.id and again.content == "hi"
    assert await _message_count(store, cid) == 1

    found = await store.find_client_message(t, cid, "m-1")
    assert found is not None and found.id == first.id
    assert await store.find_client_message(t, cid, "m-2") is None

    # The same client id in another conversation is a different message.
    p2 = await store.create_persona(t, slug="p2", name="P2", data={})
    u = await store.get_or_create_user(t, "u")
    other = await store.create_conversation(t, persona_id=p2.id, user_id=u.id)
    elsewhere, created_elsewhere = await store.add_message(
        t, other.id, role="user", content="hi", client_id="m-1"
    )
    assert created_elsewhere is True and elsewhere.id != first.id


async def test_add_message_without_client_id_always_creates(store: Store) -> None:
    t, cid = await _conversation(store)
    one, c1 = await store.add_message(t, cid, role="assistant", content="same")
    two, c2 = await store.add_message(t, cid, role="assistant", content="same")
    assert c1 is True and c2 is True
    assert one.id != two.id
    assert one.client_id is None and two.client_id is None
    assert await _message_count(store, cid) == 2


async def test_add_message_optional_fields(store: Store) -> None:
    t, cid = await _conversation(store)
    msg, _ = await store.add_message(
        t,
        cid,
        role="assistant",
        content="partial",
        status="interrupted",
        response_id="resp_1",
        message_id="msg_explicit",
    )
    assert (msg.id, msg.status, msg.response_id) == ("msg_explicit", "interrupted", "resp_1")
    [listed] = await store.list_messages(t, cid)
    assert listed == msg
    assert listed.created_at.tzinfo is not None


async def test_list_messages_order_limit_and_paging(store: Store) -> None:
    t, cid = await _conversation(store)
    ids = []
    for i in range(25):
        msg, _ = await store.add_message(t, cid, role="user", content=f"m{i}")
        ids.append(msg.id)

    everything = await store.list_messages(t, cid)
    assert [m.id for m in everything] == ids  # oldest first
    assert [m.content for m in everything] == [f"m{i}" for i in range(25)]
    created = [m.created_at for m in everything]
    assert created == sorted(created)

    assert [m.id for m in await store.list_messages(t, cid, limit=5)] == ids[-5:]
    assert [m.id for m in await store.list_messages(t, cid, limit=1)] == ids[-1:]
    assert [m.id for m in await store.list_messages(t, cid, limit=100)] == ids

    # Page backwards, 10 at a time: no overlap, nothing lost.
    pages: list[list[str]] = []
    before: str | None = None
    while True:
        page = await store.list_messages(t, cid, limit=10, before=before)
        if not page:
            break
        pages.append([m.id for m in page])
        before = page[0].id
        assert len(pages) <= 4, "paging does not terminate"
    assert [len(p) for p in pages] == [10, 10, 5]
    assert pages[0] == ids[15:] and pages[1] == ids[5:15] and pages[2] == ids[:5]
    assert [i for page in reversed(pages) for i in page] == ids

    assert [m.id for m in await store.list_messages(t, cid, before=ids[1])] == ids[:1]
    assert await store.list_messages(t, cid, before=ids[0]) == []


async def test_deleting_persona_cascades(store: Store) -> None:
    keep = await _world(store, "keep")
    t = keep.tenant.id
    doomed = await store.create_persona(t, slug="doomed", name="Doomed", data={})
    conv = await store.create_conversation(t, persona_id=doomed.id, user_id=keep.user.id)
    for i in range(3):
        await store.add_message(t, conv.id, role="user", content=str(i), client_id=f"d{i}")
    assert await _message_count(store, conv.id) == 3

    assert await store.delete_persona(t, doomed.id) is True

    assert await store.get_conversation(t, conv.id) is None
    assert await store.list_messages(t, conv.id) == []
    assert await _message_count(store, conv.id) == 0
    convs = await _scalar(
        store, "SELECT count(*) FROM conversations WHERE persona_id = :p", p=doomed.id
    )
    assert convs == 0
    # The user and the other persona's conversation and messages are untouched.
    assert await store.get_user(t, keep.user.id) == keep.user
    assert await store.get_conversation(t, keep.conv.id) == keep.conv
    assert len(await store.list_messages(t, keep.conv.id)) == len(keep.messages)
