"""Moderation policies and flags (Analysis and moderation issue).

``moderation_policies``: one row per tenant that changed the default policy
(JSON, validated by agents/moderation/policy.py). ``moderation_flags``: the
review queue (``GET /v1/flags``), newest first per status.

Both are tenant-owned: on Postgres they get the same row-level security as
every other tenant table (migration 0002). The models live in
memory/moderation_store.py.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
TABLES = ("moderation_policies", "moderation_flags")
POLICY = "salon_tenant_isolation"
CONDITION = (
    "tenant_id = current_setting('salon.tenant_id', true)"
    " OR current_setting('salon.scope', true) = 'system'"
)


def _fk(column: str, target: str, *, nullable: bool) -> sa.Column[str]:
    return sa.Column(
        column, sa.String(40), sa.ForeignKey(target, ondelete="CASCADE"), nullable=nullable
    )


def upgrade() -> None:
    op.create_table(
        "moderation_policies",
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "moderation_flags",
        sa.Column("id", sa.String(40), primary_key=True),
        _fk("tenant_id", "tenants.id", nullable=False),
        _fk("persona_id", "personas.id", nullable=True),
        _fk("user_id", "users.id", nullable=True),
        _fk("conversation_id", "conversations.id", nullable=True),
        sa.Column("message_id", sa.String(40), nullable=True),
        sa.Column("direction", sa.String(20), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("excerpt", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
    )
    op.create_index("ix_moderation_flags_queue", "moderation_flags", ["tenant_id", "status", "id"])
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(
                f"CREATE POLICY {POLICY} ON {table} USING ({CONDITION}) WITH CHECK ({CONDITION})"
            )


def downgrade() -> None:
    op.drop_index("ix_moderation_flags_queue", table_name="moderation_flags")
    op.drop_table("moderation_flags")
    op.drop_table("moderation_policies")
