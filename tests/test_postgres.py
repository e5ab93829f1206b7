"""Postgres specifics: row-level security, the pgvector migration, the whole app on Postgres.

The store contract itself runs on Postgres in test_store_contract.py; this file
covers what only Postgres has. Every database here is fresh and owned by the
non-superuser role ``salon_app`` (tests/services_pg.py), so row-level security
applies exactly as it does to a production app role.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

from memory.db import create_engine, normalize_database_url
from memory.migrate import alembic_config, current_revision, migrate
from memory.store import Store
from server.config import Settings
from server.state import DEFAULT_TENANT_ID, bootstrap_tenant
from tests.conftest import TEST_KEY, connect
from tests.services_pg import APP_ROLE, PgServer

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
TENANT_TABLES = (
    "api_keys",
    "personas",
    "users",
    "conversations",
    "messages",
)  # memories: test_memory_contract
# Tables of later migrations with the same tenant policy (0003 memories, 0005
# analysis, 0006 moderation, 0007 feeds).
POLICY_TABLES = (
    *TENANT_TABLES,
    "memories",
    "message_analyses",
    "analysis_buckets",
    "moderation_policies",
    "moderation_flags",
    "feeds",
    "feed_items",
    "voices",
    "voice_consents",
    "voice_audit",
    "media_items",
    "media_quotas",
    "social_apps",
    "social_accounts",
    "social_comments",
    "operators",
    "tenant_branding",
    "takeovers",
)


def _db(url: str) -> str:
    name = make_url(url).database
    assert name
    return name


async def _store(url: str, tmp_path: Path, *, migrated: bool = True) -> Store:
    store = Store(create_engine(normalize_database_url(url, tmp_path), pool_size=4))
    if migrated:
        await migrate(store.engine)
    return store


@pytest.fixture
async def store(postgres_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    s = await _store(postgres_url, tmp_path)
    yield s
    await s.close()


async def _fill(store: Store, label: str) -> str:
    """One tenant with a row in every tenant-owned table; return its id."""
    tenant = await store.create_tenant(label)
    await store.create_api_key(tenant.id, f"{label} key")
    persona = await store.create_persona(tenant.id, slug="p", name=label, data={})
    user = await store.get_or_create_user(tenant.id, "u")
    conv = await store.create_conversation(tenant.id, persona_id=persona.id, user_id=user.id)
    await store.add_message(tenant.id, conv.id, role="user", content=f"{label} hi")
    return tenant.id


async def _counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in TENANT_TABLES}


# -- row-level security -----------------------------------------------------------


async def test_the_app_role_is_bound_by_row_level_security(
    store: Store, postgres_url: str, pg_server: PgServer
) -> None:
    [(is_super, bypass)] = pg_server.sql(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", APP_ROLE
    )
    assert (is_super, bypass) == (False, False)
    flags = pg_server.sql(
        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
        " WHERE relname = ANY($1::text[]) AND relkind = 'r'",
        list(TENANT_TABLES),
        database=_db(postgres_url),
    )
    assert sorted(flags) == sorted((t, True, True) for t in TENANT_TABLES)
    # Tables every tenant shares stay without policies.
    [(tenants_rls, secrets_rls)] = pg_server.sql(
        "SELECT (SELECT relrowsecurity FROM pg_class WHERE relname = 'tenants'),"
        " (SELECT relrowsecurity FROM pg_class WHERE relname = 'server_secrets')",
        database=_db(postgres_url),
    )
    assert (tenants_rls, secrets_rls) == (False, False)


async def test_a_query_without_the_tenant_setting_sees_nothing(
    store: Store, postgres_url: str, pg_server: PgServer
) -> None:
    a = await _fill(store, "a")
    b = await _fill(store, "b")
    await _fill(store, "c")

    everything = {
        t: pg_server.sql(f"SELECT count(*) FROM {t}", database=_db(postgres_url))[0][0]
        for t in TENANT_TABLES
    }
    assert everything == dict.fromkeys(TENANT_TABLES, 3)

    # The raw connection of the app role, as a bug that forgot the tenant would use it.
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT current_user") == APP_ROLE
        assert await _counts(conn) == dict.fromkeys(TENANT_TABLES, 0)
        assert await conn.fetch("SELECT * FROM personas") == []
        assert await conn.fetch("SELECT * FROM messages WHERE content LIKE '%hi'") == []
        # Unscoped writes cannot reach rows either, nor create them.
        assert await conn.execute("UPDATE personas SET name = 'x'") == "UPDATE 0"
        assert await conn.execute("DELETE FROM messages") == "DELETE 0"
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await conn.execute(
                "INSERT INTO users (id, tenant_id, external_id, created_at)"
                " VALUES ('usr_x', $1, 'sneaky', now())",
                a,
            )

        # With the tenant set: that tenant's rows only.
        async with conn.transaction():
            await conn.execute("SELECT set_config('salon.tenant_id', $1, true)", a)
            assert await _counts(conn) == dict.fromkeys(TENANT_TABLES, 1)
            for table in TENANT_TABLES:
                owners = await conn.fetch(f"SELECT DISTINCT tenant_id FROM {table}")
                assert [r[0] for r in owners] == [a], table
            # Another tenant's rows can be neither changed nor written.
            assert (
                await conn.execute("UPDATE personas SET name = 'x' WHERE tenant_id = $1", b)
                == "UPDATE 0"
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():  # a savepoint; the outer one goes on
                    await conn.execute(
                        "INSERT INTO users (id, tenant_id, external_id, created_at)"
                        " VALUES ('usr_y', $1, 'sneaky', now())",
                        b,
                    )
        # The setting was transaction-local: gone with the transaction, so a
        # pooled connection never carries one tenant's scope to the next user.
        assert await _counts(conn) == dict.fromkeys(TENANT_TABLES, 0)

        # The explicit system scope sees every tenant's rows.
        async with conn.transaction():
            await conn.execute("SELECT set_config('salon.scope', 'system', true)")
            assert await _counts(conn) == dict.fromkeys(TENANT_TABLES, 3)
        assert await _counts(conn) == dict.fromkeys(TENANT_TABLES, 0)

        # Any other scope value is no scope at all.
        async with conn.transaction():
            await conn.execute("SELECT set_config('salon.scope', 'System ', true)")
            assert await _counts(conn) == dict.fromkeys(TENANT_TABLES, 0)
    finally:
        await conn.close()

    # The Store itself scopes every transaction, so it keeps working under the policies.
    assert len(await store.list_personas(b)) == 1
    assert (await store.get_persona(a, "p")) is not None


DIRECT_FUNCTIONS = ("insert_message", "live_summaries", "raise_last_seq", "recent_messages")


async def test_the_direct_path_functions_scope_one_statement_and_run_as_the_caller(
    store: Store, postgres_url: str, pg_server: PgServer
) -> None:
    """Migration 0013's functions: row security applies inside, the tenant ends with the call."""
    a = await _fill(store, "a")
    await _fill(store, "b")
    definers = pg_server.sql(
        "SELECT proname, prosecdef FROM pg_proc WHERE proname = ANY($1::text[])",
        [f"salon_{name}" for name in DIRECT_FUNCTIONS],
        database=_db(postgres_url),
    )
    assert sorted(definers) == [
        ("salon_insert_message", False),
        ("salon_live_summaries", False),
        ("salon_raise_last_seq", False),
        ("salon_recent_messages", False),
    ]
    conn = await asyncpg.connect(postgres_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('salon.tenant_id', $1, true)", a)
            conv = await conn.fetchval("SELECT id FROM conversations")
        rows = await conn.fetch("SELECT content FROM salon_recent_messages($1, $2, 5)", a, conv)
        assert [r["content"] for r in rows] == ["a hi"]
        # The tenant was the call's own: the next statement on the connection sees nothing.
        assert await conn.fetchval("SELECT current_setting('salon.tenant_id', true)") in ("", None)
        assert await _counts(conn) == dict.fromkeys(TENANT_TABLES, 0)
        # A system scope set by a caller does not survive into the call: inside a
        # caller's transaction, the function leaves that transaction on its tenant.
        async with conn.transaction():
            await conn.execute("SELECT set_config('salon.scope', 'system', true)")
            assert await _counts(conn) == dict.fromkeys(TENANT_TABLES, 2)
            await conn.fetch("SELECT * FROM salon_recent_messages($1, $2, 5)", a, conv)
            assert await _counts(conn) == dict.fromkeys(TENANT_TABLES, 1)
    finally:
        await conn.close()


async def test_a_tenant_transaction_cannot_write_another_tenants_row(store: Store) -> None:
    a = await _fill(store, "a")
    b = await _fill(store, "b")
    # Should application code ever build a row for the wrong tenant inside a
    # tenant's transaction, the database refuses it (the policy's WITH CHECK).
    async with store._tx(a) as s:
        visible = (await s.execute(text("SELECT count(*) FROM conversations"))).scalar_one()
        assert visible == 1
    with pytest.raises(DBAPIError, match="row-level security"):
        async with store._tx(a) as s:
            await s.execute(
                text(
                    "INSERT INTO users (id, tenant_id, external_id, created_at)"
                    " VALUES ('usr_z', :t, 'z', now())"
                ),
                {"t": b},
            )
    assert [u.external_id for u in [await store.get_or_create_user(b, "u")]] == ["u"]


# -- migrations ---------------------------------------------------------------------


async def test_migrations_are_idempotent_and_create_vector(
    postgres_url: str, pg_server: PgServer, tmp_path: Path
) -> None:
    # The fixture's database already has `vector` (created by the superuser);
    # start from one without it to see the migration create it where it may.
    db = _db(postgres_url)
    pg_server.script("DROP EXTENSION vector", database=db)
    pg_server.script(f"ALTER ROLE {APP_ROLE} SUPERUSER")  # only to create the extension
    try:
        store = await _store(postgres_url, tmp_path)
    finally:
        pg_server.script(f"ALTER ROLE {APP_ROLE} NOSUPERUSER")
    try:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert head == HEAD
        for _ in range(3):
            await migrate(store.engine)
            assert await current_revision(store.engine) == head
        assert (
            pg_server.sql("SELECT extname FROM pg_extension", database=db).count(("vector",)) == 1
        )
        # Now as the ordinary role, with the extension present: still a no-op.
        await migrate(store.engine)
        assert await current_revision(store.engine) == head
        # The extension works for the app role (used by semantic recall).
        conn = await asyncpg.connect(postgres_url)
        try:
            distance = await conn.fetchval("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector")
            assert distance == pytest.approx(1.0)
        finally:
            await conn.close()
    finally:
        await store.close()


async def test_a_missing_vector_extension_tells_the_operator_what_to_run(
    postgres_url: str, pg_server: PgServer, tmp_path: Path
) -> None:
    db = _db(postgres_url)
    pg_server.script("DROP EXTENSION vector", database=db)
    store = await _store(postgres_url, tmp_path, migrated=False)
    try:
        with pytest.raises(RuntimeError) as err:
            await migrate(store.engine)
        message = str(err.value)
        assert "superuser" in message and "CREATE EXTENSION IF NOT EXISTS vector" in message
        assert db in message and APP_ROLE in message
        # Nothing half-done: the failed upgrade rolled back as a whole.
        assert await current_revision(store.engine) is None

        pg_server.script("CREATE EXTENSION vector", database=db)  # what the operator does
        await migrate(store.engine)
        assert await current_revision(store.engine) == HEAD
    finally:
        await store.close()


async def test_downgrade_removes_row_security_and_upgrade_restores_it(
    store: Store, postgres_url: str, pg_server: PgServer
) -> None:
    def _to(revision: str, up: bool) -> Any:
        def _run(conn: Connection) -> None:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            (command.upgrade if up else command.downgrade)(cfg, revision)

        return _run

    def _policies() -> list[tuple[Any, ...]]:
        return pg_server.sql(
            "SELECT tablename FROM pg_policies ORDER BY 1", database=_db(postgres_url)
        )

    assert [p[0] for p in _policies()] == sorted(POLICY_TABLES)
    async with store.engine.begin() as conn:
        await conn.run_sync(_to("0001", up=False))
    assert _policies() == []
    flags = pg_server.sql(
        "SELECT bool_or(relrowsecurity), bool_or(relforcerowsecurity) FROM pg_class"
        " WHERE relname = ANY($1::text[])",
        list(TENANT_TABLES),
        database=_db(postgres_url),
    )
    assert flags == [(False, False)]
    async with store.engine.begin() as conn:
        await conn.run_sync(_to("head", up=True))
    assert [p[0] for p in _policies()] == sorted(POLICY_TABLES)


# -- bootstrap races ----------------------------------------------------------------


def _settings(tmp_path: Path, url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=url, bootstrap_key=SecretStr(TEST_KEY))


async def _bootstrapped(pg_server: PgServer, db: str) -> tuple[int, int, int]:
    [(tenants, keys, default_keys)] = pg_server.sql(
        "SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM api_keys),"
        " (SELECT count(*) FROM api_keys WHERE tenant_id = $1)",
        DEFAULT_TENANT_ID,
        database=db,
    )
    return tenants, keys, default_keys


async def _start_replica(store: Store, settings: Settings) -> None:
    await migrate(store.engine)
    await bootstrap_tenant(store, settings)


@pytest.mark.parametrize("start", ["together", "after-migrating"])
async def test_two_replicas_bootstrapping_at_once_make_one_tenant_and_one_key(
    start: str, pg_server: PgServer, tmp_path: Path
) -> None:
    for _ in range(3):  # a few fresh databases: a race that passes once proves little
        db = pg_server.create_database()
        url = pg_server.url(db)
        stores = [await _store(url, tmp_path, migrated=False) for _ in range(2)]
        try:
            settings = _settings(tmp_path, url)
            if start == "together":  # migrate + bootstrap, as two `salon serve` starting
                await asyncio.gather(*(_start_replica(s, settings) for s in stores))
            else:  # both past the migration lock, both see an empty database
                await asyncio.gather(*(migrate(s.engine) for s in stores))
                await asyncio.gather(*(bootstrap_tenant(s, settings) for s in stores))
            assert await _bootstrapped(pg_server, db) == (1, 1, 1)
            found = await stores[1].find_api_key(TEST_KEY)
            assert found is not None and found.tenant_id == DEFAULT_TENANT_ID
            # A later start changes nothing.
            await bootstrap_tenant(stores[0], settings)
            assert await _bootstrapped(pg_server, db) == (1, 1, 1)
        finally:
            for s in stores:
                await s.close()
            pg_server.drop_database(db)


# -- the whole app on Postgres ------------------------------------------------------


async def test_salon_serve_runs_on_postgres_with_row_security(
    postgres_url: str, make_server: Any, pg_server: PgServer
) -> None:
    server = make_server(SALON_DATABASE_URL=postgres_url, SALON_DATABASE_POOL_SIZE="3")
    persona = server.create_persona(name="Ada on Postgres")

    c = await connect(server)
    ready = await c.start(persona["slug"])
    assert ready["type"] == "session.ready", ready
    conv = ready["conversation_id"]
    await c.send({"type": "message.create", "id": "pg-1", "text": "hello"})
    accepted = await c.until("message.accepted")
    done = await c.until("response.done")
    deltas = [e["delta"] for e in c.events if e["type"] == "response.text.delta"]
    assert deltas and "".join(deltas) == done["text"] == "Hello from the fake model."
    await c.close()

    r = httpx.get(f"{server.url}/v1/conversations/{conv}/messages", headers=server.auth)
    assert r.status_code == 200, r.text
    history = r.json()["data"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "hello"),
        ("assistant", "Hello from the fake model."),
    ]
    assert history[0]["id"] == accepted["message_id"]
    assert history[1]["id"] == done["message_id"]

    db = _db(postgres_url)
    # The rows really are in Postgres, under the bootstrapped tenant.
    stored = pg_server.sql(
        "SELECT tenant_id, role, content FROM messages WHERE conversation_id = $1"
        " ORDER BY created_at",
        conv,
        database=db,
    )
    assert stored == [
        (DEFAULT_TENANT_ID, "user", "hello"),
        (DEFAULT_TENANT_ID, "assistant", "Hello from the fake model."),
    ]
    # ...written by the server as the ordinary app role, with the policies in force,
    # through a pool no larger than configured (pool size + as many overflow).
    sessions = pg_server.sql(
        "SELECT usename FROM pg_stat_activity WHERE datname = $1 AND application_name = 'salon'",
        db,
    )
    assert sessions and {s[0] for s in sessions} == {APP_ROLE}
    assert len(sessions) <= 6
    [(forced,)] = pg_server.sql(
        "SELECT bool_and(relforcerowsecurity) FROM pg_class WHERE relname = ANY($1::text[])",
        list(TENANT_TABLES),
        database=db,
    )
    assert forced is True
    # `salon migrate` style idempotence with the server running.
    assert pg_server.sql("SELECT version_num FROM alembic_version", database=db) == [(HEAD,)]


async def test_postgres_unreachable_then_back(
    make_server: Any, postgres_url: str, pg_server: Any
) -> None:
    """Postgres refusing connections: /readyz 503, clear errors, nothing acknowledged lost, recovery."""
    from sqlalchemy.engine import make_url

    from tests.conftest import connect

    database = make_url(postgres_url).database
    srv = make_server(SALON_DATABASE_URL=postgres_url)
    p = srv.create_persona()
    c = await connect(srv)
    conv = (await c.start(p["id"], user="steady"))["conversation_id"]
    await c.send({"type": "message.create", "id": "1", "text": "before"})
    await c.until("response.done")

    # the database stops accepting connections and drops the open ones
    pg_server.sql(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
    pg_server.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
    )
    try:
        r = httpx.get(srv.url + "/readyz", timeout=15)
        assert r.status_code == 503 and r.json()["checks"]["database"].startswith("error")
        await c.send({"type": "message.create", "id": "2", "text": "during"})
        err = await c.until("error", timeout=20)
        assert err["code"] == "unavailable" and err["id"] == "2"  # not taken, and said so
        r = httpx.get(f"{srv.url}/v1/conversations/{conv}/messages", headers=srv.auth, timeout=15)
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    finally:
        pg_server.sql(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')

    for _ in range(100):
        if httpx.get(srv.url + "/readyz", timeout=15).status_code == 200:
            break
        await asyncio.sleep(0.1)
    await c.send({"type": "message.create", "id": "2", "text": "during"})  # the same id, again
    await c.until("message.accepted", timeout=15)
    await c.until("response.done", timeout=15)
    history = httpx.get(f"{srv.url}/v1/conversations/{conv}/messages", headers=srv.auth).json()[
        "data"
    ]
    assert [m["content"] for m in history if m["role"] == "user"] == ["before", "during"]
    await c.close()
