"""Database URLs and the async engine.

``SALON_DATABASE_URL`` accepts the URLs people paste (``postgresql://``,
``postgres://``, ``sqlite:///path``, libpq's ``?host=/socket/dir`` and
``?sslmode=``); this module turns them into the async driver URLs SQLAlchemy
wants and configures the pool (Postgres) or the file (SQLite) for a server
workload. docs/postgres.md describes running on Postgres.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def normalize_database_url(url: str | None, data_dir: Path) -> str:
    """Return an async-driver URL; ``None`` means the SQLite file in ``data_dir``.

    Postgres URLs get the asyncpg driver. A unix socket is given the libpq way,
    ``postgresql://user@/db?host=/var/run/postgresql``, and passes through.
    libpq's ``sslmode=`` becomes asyncpg's ``ssl=`` (same values).
    """
    if not url:
        return f"sqlite+aiosqlite:///{(data_dir / 'salon.db').resolve()}"
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    if parsed.drivername == "postgresql+asyncpg" and "sslmode" in parsed.query:
        # asyncpg.connect() has no sslmode keyword; SQLAlchemy hands query
        # parameters to it as keywords, so a pasted libpq URL would fail.
        sslmode = parsed.query["sslmode"]
        parsed = parsed.difference_update_query(["sslmode"])
        if "ssl" not in parsed.query:
            parsed = parsed.update_query_dict({"ssl": sslmode})
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """Create the async engine for ``url`` (already normalized).

    On Postgres the pool keeps up to ``pool_size`` connections open and allows
    as many again in bursts; a connection is pinged when taken from the pool,
    so one cut by a database restart or failover is replaced, not handed out.
    """
    kwargs: dict[str, Any] = {"echo": echo}
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        try:
            import asyncpg  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on install
            raise RuntimeError(
                "Postgres support needs the 'postgres' extra: pip install 'salon[postgres]'"
            ) from exc
        if pool_size < 1:
            raise ValueError(f"SALON_DATABASE_POOL_SIZE must be at least 1, got {pool_size}")
        kwargs.update(
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            connect_args={"server_settings": {"application_name": "salon"}},
        )
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):
        tune_sqlite(engine.sync_engine)
    return engine


def tune_sqlite(
    engine: Engine, *, busy_timeout_ms: int = 30000, autocheckpoint: bool = True
) -> None:
    """Set the pragmas Salon relies on for every new connection of ``engine``.

    ``busy_timeout_ms`` is how long a statement waits for another connection's
    write lock before failing with "database is locked". Without
    ``autocheckpoint`` the connection's commits never copy the WAL back into
    the database file (and fsync it): someone else must checkpoint.
    """

    # WAL lets readers proceed while a reply is being written; foreign keys are
    # off by default in SQLite and our cascades rely on them.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if not autocheckpoint:
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()
