"""Media items and per-tenant media quotas (docs/media.md).

``media_items``: one generated or imported image, video or avatar, its state
and the content-addressed file it points to once done; ``media_quotas``: a
tenant's own byte quota. The models are in memory/media_store.py.

On Postgres both tables get the same row-level security as every other
tenant-owned table (migration 0002).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
POLICY = "salon_tenant_isolation"
CONDITION = (
    "tenant_id = current_setting('salon.tenant_id', true)"
    " OR current_setting('salon.scope', true) = 'system'"
)
TABLES = ("media_items", "media_quotas")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "media_items",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "persona_id",
            sa.String(40),
            sa.ForeignKey("personas.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column(
            "user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column(
            "conversation_id",
            sa.String(40),
            sa.ForeignKey("conversations.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("client_id", sa.String(200), nullable=True),
        sa.Column("requested_by", sa.String(200), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("generator", sa.String(100), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("storage_key", sa.String(512), nullable=True),
        sa.Column("mime", sa.String(100), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("error_code", sa.String(100), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
    )
    op.create_index(
        "ix_media_items_owner", "media_items", ["tenant_id", "persona_id", "kind", "created_at"]
    )
    op.create_index("ix_media_items_user", "media_items", ["tenant_id", "user_id"])
    op.create_index("ix_media_items_sha256", "media_items", ["sha256"])
    op.create_table(
        "media_quotas",
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("max_bytes", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    if dialect == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(
                f"CREATE POLICY {POLICY} ON {table} USING ({CONDITION}) WITH CHECK ({CONDITION})"
            )


def downgrade() -> None:
    op.drop_table("media_quotas")
    op.drop_index("ix_media_items_sha256", table_name="media_items")
    op.drop_index("ix_media_items_user", table_name="media_items")
    op.drop_index("ix_media_items_owner", table_name="media_items")
    op.drop_table("media_items")
