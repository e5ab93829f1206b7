"""The operator console: operator accounts, tenant branding (memory/console_store.py), and
an index for the recently active conversations.

Both tables get the tenant row-level security of migration 0002 on Postgres.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
POLICY = "salon_tenant_isolation"
CONDITION = (
    "tenant_id = current_setting('salon.tenant_id', true)"
    " OR current_setting('salon.scope', true) = 'system'"
)


def _tenant() -> sa.Column:
    return sa.Column(
        "tenant_id", sa.String(40), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_index("ix_conversations_updated", "conversations", ["tenant_id", "updated_at"])
    op.create_table(
        "operators",
        sa.Column("id", sa.String(40), primary_key=True),
        _tenant(),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("disabled_at", TS, nullable=True),
    )
    op.create_index("ix_operators_tenant", "operators", ["tenant_id", "created_at"])
    op.create_table(
        "tenant_branding",
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("logo", sa.Text(), nullable=True),
        sa.Column("colors", sa.JSON(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table in ("operators", "tenant_branding"):
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(
                f"CREATE POLICY {POLICY} ON {table} USING ({CONDITION}) WITH CHECK ({CONDITION})"
            )


def downgrade() -> None:
    op.drop_index("ix_conversations_updated", table_name="conversations")
    op.drop_table("tenant_branding")
    op.drop_index("ix_operators_tenant", table_name="operators")
    op.drop_table("operators")
