"""Postgres: the pgvector extension and row-level security on tenant-owned tables.

A no-op on SQLite. On Postgres every tenant-owned table gets ``ENABLE`` and
``FORCE ROW LEVEL SECURITY`` (FORCE so that the table owner, usually the app's
own role, is bound too) and one policy: a row is visible and writable when its
``tenant_id`` equals the transaction's ``salon.tenant_id`` setting, or when the
transaction opted in to cross-tenant work with ``salon.scope = 'system'``.
memory.store sets one of the two in every transaction (docs/postgres.md).

Revision ID: 0002
Revises: 0001
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

TENANT_TABLES = ("api_keys", "personas", "users", "conversations", "messages")
POLICY = "salon_tenant_isolation"
# current_setting(..., true) is NULL/'' when unset, so a transaction that set
# neither sees no tenant-owned row at all.
CONDITION = (
    "tenant_id = current_setting('salon.tenant_id', true)"
    " OR current_setting('salon.scope', true) = 'system'"
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    _ensure_vector(bind)
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"DROP POLICY IF EXISTS {POLICY} ON {table}")
        op.execute(
            f"CREATE POLICY {POLICY} ON {table} USING ({CONDITION}) WITH CHECK ({CONDITION})"
        )
    bypass = bind.execute(
        sa.text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
    ).scalar()
    if bypass:
        log.warning(
            "role %r is a superuser or has BYPASSRLS: row-level security does not apply to it; "
            "run the server as an ordinary role (docs/postgres.md)",
            bind.execute(sa.text("SELECT current_user")).scalar(),
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table in TENANT_TABLES:
        op.execute(f"DROP POLICY IF EXISTS {POLICY} ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    # The vector extension stays: dropping it needs its owner (usually a
    # superuser) and would destroy any vector column that later migrations or
    # other applications created in this database.


def _ensure_vector(bind: sa.engine.Connection) -> None:
    """Create pgvector if missing; an app role without the privilege is fine when it exists."""
    exists = bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")).scalar()
    if exists:
        return
    try:
        with bind.begin_nested():  # a savepoint, so the error below is readable, not "aborted"
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
    except sa.exc.DBAPIError as exc:
        database, user = bind.execute(sa.text("SELECT current_database(), current_user")).one()
        raise RuntimeError(
            f"Salon needs the PostgreSQL extension 'vector' (pgvector) in database "
            f"{database!r}, and role {user!r} cannot create it: {exc.orig}. "
            f"As a superuser, run `CREATE EXTENSION IF NOT EXISTS vector;` in that database "
            f"(pgvector must be installed on the server), then run `salon migrate` again."
        ) from exc
