"""Per-message analysis and analytics buckets (docs/analysis.md).

``message_analyses``: one row per analysed message (sentiment, Plutchik's
eight emotions, language), deleted with its message.

``analysis_buckets``: running sums per time bucket (hour and day) for each
slice of a tenant (a persona, a user and a channel, each either one value or
``*`` for all), so analytics read a few rows instead of scanning messages.
The primary key is the slice followed by ``bucket_start``, so a time series
is one range read of it.

On Postgres both tables get the same row-level security as every other
tenant-owned table (migration 0002).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
TABLES = ("message_analyses", "analysis_buckets")
EMOTIONS = ("joy", "trust", "fear", "surprise", "sadness", "disgust", "anger", "anticipation")
POLICY = "salon_tenant_isolation"
CONDITION = (
    "tenant_id = current_setting('salon.tenant_id', true)"
    " OR current_setting('salon.scope', true) = 'system'"
)


def _tenant() -> sa.Column[str]:
    return sa.Column(
        "tenant_id",
        sa.String(40),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "message_analyses",
        sa.Column(
            "message_id",
            sa.String(40),
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        _tenant(),
        sa.Column("compound", sa.Float(), nullable=False),
        sa.Column("pos", sa.Float(), nullable=False),
        sa.Column("neu", sa.Float(), nullable=False),
        sa.Column("neg", sa.Float(), nullable=False),
        sa.Column("emotions", sa.JSON(), nullable=False),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("analyzer", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_message_analyses_tenant_id", "message_analyses", ["tenant_id"])
    sums = [
        sa.Column(f"sum_{name}", sa.Float(), nullable=False)
        for name in ("compound", "pos", "neu", "neg", *EMOTIONS)
    ]
    op.create_table(
        "analysis_buckets",
        _tenant(),
        sa.Column("granularity", sa.String(8), nullable=False),
        sa.Column("persona_key", sa.String(40), nullable=False),
        sa.Column("user_key", sa.String(40), nullable=False),
        sa.Column("channel_key", sa.String(40), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("bucket_start", TS, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        *sums,
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "granularity",
            "persona_key",
            "user_key",
            "channel_key",
            "role",
            "bucket_start",
            name="pk_analysis_buckets",
        ),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(
                f"CREATE POLICY {POLICY} ON {table} USING ({CONDITION}) WITH CHECK ({CONDITION})"
            )


def downgrade() -> None:
    # Policies go with their tables.
    op.drop_table("analysis_buckets")
    op.drop_index("ix_message_analyses_tenant_id", table_name="message_analyses")
    op.drop_table("message_analyses")
