"""RSS feeds: the ``feeds`` and ``feed_items`` tables (docs/feeds.md).

``feeds`` holds one subscription of a persona to a feed URL and its fetch
status; ``feed_items`` the items seen, unique per (feed, dedupe key), with
their keyphrases and sentiment. The models are in memory/feeds_store.py.

On Postgres both tables get the same row-level security as every other
tenant-owned table (migration 0002).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
POLICY = "salon_tenant_isolation"
CONDITION = (
    "tenant_id = current_setting('salon.tenant_id', true)"
    " OR current_setting('salon.scope', true) = 'system'"
)
TABLES = ("feeds", "feed_items")


def _fk(column: str, target: str) -> sa.Column[str]:
    return sa.Column(
        column, sa.String(40), sa.ForeignKey(target, ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "feeds",
        sa.Column("id", sa.String(40), primary_key=True),
        _fk("tenant_id", "tenants.id"),
        _fk("persona_id", "personas.id"),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("title", sa.String(500), nullable=True),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("etag", sa.String(500), nullable=True),
        sa.Column("last_modified", sa.String(100), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_fetch_at", TS, nullable=True),
        sa.Column("last_ok_at", TS, nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_fetch_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("tenant_id", "persona_id", "url", name="uq_feeds_persona_url"),
    )
    op.create_index("ix_feeds_tenant_id", "feeds", ["tenant_id"])
    op.create_index("ix_feeds_due", "feeds", ["enabled", "next_fetch_at"])
    op.create_table(
        "feed_items",
        sa.Column("id", sa.String(40), primary_key=True),
        _fk("tenant_id", "tenants.id"),
        _fk("feed_id", "feeds.id"),
        _fk("persona_id", "personas.id"),
        sa.Column("dedupe_key", sa.String(64), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("link", sa.String(2000), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("published_at", TS, nullable=True),
        sa.Column("seen_at", TS, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("keyphrases", sa.JSON(), nullable=False),
        sa.Column("sentiment", sa.Float(), nullable=False),
        sa.UniqueConstraint("feed_id", "dedupe_key", name="uq_feed_items_key"),
    )
    op.create_index("ix_feed_items_persona_at", "feed_items", ["tenant_id", "persona_id", "at"])
    if dialect == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(
                f"CREATE POLICY {POLICY} ON {table} USING ({CONDITION}) WITH CHECK ({CONDITION})"
            )


def downgrade() -> None:
    op.drop_index("ix_feed_items_persona_at", table_name="feed_items")
    op.drop_table("feed_items")
    op.drop_index("ix_feeds_due", table_name="feeds")
    op.drop_index("ix_feeds_tenant_id", table_name="feeds")
    op.drop_table("feeds")
