"""Postgres (16, with pgvector) for tests: one server per session, a fresh database per test.

The server is PyPI ``pgserver`` (PostgreSQL binaries and pgvector in a wheel;
it works as root by running postgres as its own system user). It listens on a
unix socket only, in a private temporary directory, and is stopped at the end
of the session, on failure too.

Fixtures:

- ``pg_server`` (session): the running server, a :class:`PgServer`; its
  :meth:`PgServer.sql` runs SQL as the superuser.
- ``postgres_url`` (function): a URL for a brand-new database owned by the
  ordinary login role ``salon_app`` (not a superuser, no BYPASSRLS, so
  row-level security applies to it exactly as to a production app role), with
  the ``vector`` extension already created by the superuser. Usable as
  ``SALON_DATABASE_URL`` and with ``memory.db.normalize_database_url``.
  The database is dropped after the test.

Postgres tests never skip silently: without pgserver they fail and say how to
install it. ``SALON_TESTS_SKIP_POSTGRES=1`` skips them on purpose on a
developer machine; it is refused when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest

APP_ROLE = "salon_app"
APP_PASSWORD = "salon-app-pw"  # sent only if the server asks; the test cluster trusts local sockets
TEMPLATE_DB = "salon_template"
SUPERUSER = "postgres"

T = TypeVar("T")


def _import_pgserver() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI).
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:
        if os.environ.get("SALON_TESTS_SKIP_POSTGRES") == "1" and not os.environ.get("CI"):
            pytest.skip("Postgres tests skipped on request (SALON_TESTS_SKIP_POSTGRES=1)")
        pytest.fail(
            "Postgres tests need PyPI 'pgserver' (the 'dev' extra: scripts/setup "
            f"'local-models,postgres,redis,dev'); it could not be imported: {exc}",
            pytrace=False,
        )
    return pgserver


def _data_parent() -> str | None:
    """Where the cluster's files go: tmpfs when there is room, else the temp dir.

    ``CREATE DATABASE`` writes a few hundred files; on a disk-backed ext4
    that takes 40-250 ms, on tmpfs ~15 ms, and a database per test makes that
    the cost that counts. Not under pytest's basetemp either: pytest re-chmods
    that to 0700 when another session starts, which would lock out the postgres
    system user.
    """
    if chosen := os.environ.get("SALON_TEST_PG_DIR"):
        return chosen
    shm = "/dev/shm"
    try:
        free = shutil.disk_usage(shm).free
    except OSError:
        return None
    return shm if free >= 1 << 30 and os.access(shm, os.W_OK) else None


class PgServer:
    """A running test Postgres: URLs for its roles and superuser SQL."""

    def __init__(self, handle: Any, root: Path) -> None:
        self.handle = handle
        self.root = root
        uri = handle.get_uri()
        self.socket_dir = uri.split("?host=", 1)[1]
        # One worker thread runs every superuser statement in its own short
        # event loop, so the helpers are callable from sync and async code alike.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="pg-superuser")

    def url(
        self, database: str, *, user: str = APP_ROLE, password: str | None = APP_PASSWORD
    ) -> str:
        """A libpq-style URL over the unix socket (what an operator would paste)."""
        auth = quote(user) + (f":{quote(password)}" if password else "")
        return f"postgresql://{auth}@/{database}?host={self.socket_dir}"

    def superuser_url(self, database: str = "postgres") -> str:
        return self.url(database, user=SUPERUSER, password=None)

    def _run(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return self._worker.submit(asyncio.run, fn()).result(timeout=60)

    def sql(self, statement: str, *args: Any, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser; return its rows as tuples."""
        import asyncpg

        async def _go() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(self.superuser_url(database))
            try:
                return [tuple(r) for r in await conn.fetch(statement, *args)]
            finally:
                await conn.close()

        return self._run(_go)

    def script(self, *statements: str, database: str = "postgres") -> None:
        """Run statements one by one as the superuser on one connection (no parameters).

        One at a time because ``CREATE DATABASE`` and ``ALTER SYSTEM`` refuse to
        run inside the implicit transaction of a multi-statement query.
        """
        import asyncpg

        async def _go() -> None:
            conn = await asyncpg.connect(self.superuser_url(database))
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()

        self._run(_go)

    def setup(self) -> None:
        """Tune for tests, create the app role and the template every test database copies."""
        # A throwaway cluster: durability buys nothing, speed does.
        self.script(
            "ALTER SYSTEM SET fsync = off",
            "ALTER SYSTEM SET synchronous_commit = off",
            "ALTER SYSTEM SET full_page_writes = off",
            "SELECT pg_reload_conf()",
            f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}'"
            " NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE",
            f"CREATE DATABASE {TEMPLATE_DB}",
        )
        self.script("CREATE EXTENSION IF NOT EXISTS vector", database=TEMPLATE_DB)
        self.script(f"ALTER DATABASE {TEMPLATE_DB} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")

    def create_database(self) -> str:
        """A fresh database owned by the app role, ``vector`` already created (by the superuser).

        It is copied from a template that holds only the extension, which takes
        ~15 ms instead of running ``CREATE EXTENSION`` in every new database.
        """
        name = "salon_test_" + uuid.uuid4().hex[:12]
        self.script(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB} OWNER {APP_ROLE}")
        return name

    def drop_database(self, name: str) -> None:
        # FORCE ends sessions a test left open (e.g. a server that is still stopping).
        self.script(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
        try:
            self.handle.cleanup()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A Postgres 16 + pgvector server for this test session (stopped at the end)."""
    pgserver = _import_pgserver()
    root = Path(tempfile.mkdtemp(prefix="salon-pg-", dir=_data_parent()))
    handle = None
    try:
        handle = pgserver.get_server(root / "data", cleanup_mode="stop")
        server = PgServer(handle, root)
        server.setup()
    except BaseException:
        if handle is not None:
            handle.cleanup()
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(pg_server: PgServer) -> Iterator[str]:
    """A URL for a fresh database of this test only, as the non-superuser app role."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)
