"""Operator takeovers, recorded (agents/takeover.py, memory/takeovers_store.py).

On Postgres the table gets the same row-level security as every other
tenant-owned table (migration 0002).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
POLICY = "salon_tenant_isolation"
CONDITION = (
    "tenant_id = current_setting('salon.tenant_id', true)"
    " OR current_setting('salon.scope', true) = 'system'"
)


def upgrade() -> None:
    op.create_table(
        "takeovers",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "conversation_id",
            sa.String(40),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("operator", sa.String(200), nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("ended_by", sa.String(200), nullable=True),
    )
    op.create_index("ix_takeovers_conversation", "takeovers", ["tenant_id", "conversation_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE takeovers ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE takeovers FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {POLICY} ON takeovers USING ({CONDITION}) WITH CHECK ({CONDITION})"
        )


def downgrade() -> None:
    op.drop_index("ix_takeovers_conversation", table_name="takeovers")
    op.drop_table("takeovers")
