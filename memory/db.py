"""Database URLs and the async engine.

``SALON_DATABASE_URL`` accepts the URLs people paste (``postgresql://``,
``postgres://``, ``sqlite:///path``); this module turns them into the async
driver URLs SQLAlchemy wants and configures SQLite for a server workload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def normalize_database_url(url: str | None, data_dir: Path) -> str:
    """Return an async-driver URL; ``None`` means the SQLite file in ``data_dir``."""
    if not url:
        return f"sqlite+aiosqlite:///{(data_dir / 'salon.db').resolve()}"
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """Create the async engine for ``url`` (already normalized)."""
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
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):
        _tune_sqlite(engine)
    return engine


def _tune_sqlite(engine: AsyncEngine) -> None:
    # WAL lets readers proceed while a reply is being written; foreign keys are
    # off by default in SQLite and our cascades rely on them.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()
