"""Comment automation: social apps, connected accounts, comments, the delivery log.

The models are in memory/social_store.py (docs/integrations.md). On Postgres
the tenant-owned tables get the same row-level security as every other
(migration 0002); ``social_deliveries`` is platform-wide (a delivery is
logged before anyone knows whose it is) and holds no tenant data.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
POLICY = "salon_tenant_isolation"
CONDITION = (
    "tenant_id = current_setting('salon.tenant_id', true)"
    " OR current_setting('salon.scope', true) = 'system'"
)
TENANT_TABLES = ("social_apps", "social_accounts", "social_comments")


def _tenant() -> sa.Column[str]:
    return sa.Column(
        "tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "social_apps",
        sa.Column("id", sa.String(40), primary_key=True),
        _tenant(),
        sa.Column("platform", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secrets", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_social_apps_tenant_id", "social_apps", ["tenant_id"])
    op.create_table(
        "social_accounts",
        sa.Column("id", sa.String(40), primary_key=True),
        _tenant(),
        sa.Column("platform", sa.String(20), nullable=False),
        sa.Column("account_id", sa.String(200), nullable=False),
        sa.Column(
            "persona_id",
            sa.String(40),
            sa.ForeignKey("personas.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "app_id",
            sa.String(40),
            sa.ForeignKey("social_apps.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("credentials", sa.Text(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("cursor", sa.JSON(), nullable=False),
        sa.Column("next_poll_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("platform", "account_id", name="uq_social_accounts_platform_account"),
    )
    op.create_index("ix_social_accounts_tenant_id", "social_accounts", ["tenant_id"])
    op.create_table(
        "social_comments",
        sa.Column("id", sa.String(40), primary_key=True),
        _tenant(),
        sa.Column(
            "account_pk",
            sa.String(40),
            sa.ForeignKey("social_accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("platform", sa.String(20), nullable=False),
        sa.Column("comment_id", sa.String(200), nullable=False),
        sa.Column("post_id", sa.String(200), nullable=True),
        sa.Column("parent_id", sa.String(200), nullable=True),
        sa.Column("author_id", sa.String(200), nullable=False),
        sa.Column("author_name", sa.String(200), nullable=False),
        sa.Column("author_is_account", sa.Boolean(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column(
            "conversation_id",
            sa.String(40),
            sa.ForeignKey("conversations.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("reply_text", sa.Text(), nullable=True),
        sa.Column("reply_id", sa.String(200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("platform", "comment_id", name="uq_social_comments_platform_comment"),
    )
    op.create_index(
        "ix_social_comments_queue", "social_comments", ["tenant_id", "status", "received_at"]
    )
    op.create_index("ix_social_comments_due", "social_comments", ["status", "next_attempt_at"])
    op.create_table(
        "social_deliveries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("platform", sa.String(20), nullable=False),
        sa.Column("delivery_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("code", sa.String(40), nullable=True),
        sa.Column("comments", sa.Integer(), nullable=False),
        sa.Column("new_comments", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("received_at", TS, nullable=False),
    )
    op.create_index("ix_social_deliveries_received", "social_deliveries", ["received_at"])
    if dialect == "postgresql":
        for table in TENANT_TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(
                f"CREATE POLICY {POLICY} ON {table} USING ({CONDITION}) WITH CHECK ({CONDITION})"
            )


def downgrade() -> None:
    op.drop_index("ix_social_deliveries_received", table_name="social_deliveries")
    op.drop_table("social_deliveries")
    op.drop_index("ix_social_comments_due", table_name="social_comments")
    op.drop_index("ix_social_comments_queue", table_name="social_comments")
    op.drop_table("social_comments")
    op.drop_index("ix_social_accounts_tenant_id", table_name="social_accounts")
    op.drop_table("social_accounts")
    op.drop_index("ix_social_apps_tenant_id", table_name="social_apps")
    op.drop_table("social_apps")
