"""Long-term memory: the ``memories`` table (docs/memory.md).

One row per memory item of a persona about a user: episodic turns, facts,
preferences, events and summaries, with importance, pinning, provenance,
validity (``valid_from``/``valid_to``/``superseded_by``) and an embedding.

The embedding is ``vector(384)`` with an HNSW index (cosine) on Postgres and
float32 bytes in a BLOB on SQLite. SQLite has no vector index (retrieval scans
the user's memories exactly), so the index there is an empty partial index
(``WHERE 0``): it costs nothing and keeps the schema identical to the models.

On Postgres the table gets the same row-level security as every other
tenant-owned table (migration 0002).

Revision ID: 0003
Revises: 0002
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
DIMENSIONS = 384
POLICY = "salon_tenant_isolation"
CONDITION = (
    "tenant_id = current_setting('salon.tenant_id', true)"
    " OR current_setting('salon.scope', true) = 'system'"
)


def _embedding_type(dialect: str) -> sa.types.TypeEngine[Any]:
    if dialect == "postgresql":
        from pgvector.sqlalchemy import Vector

        return Vector(DIMENSIONS)
    return sa.LargeBinary()


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "memories",
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
            nullable=False,
        ),
        sa.Column(
            "user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("importance", sa.Float(), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("source_message_ids", sa.JSON(), nullable=False),
        sa.Column("source_refs", sa.JSON(), nullable=False),
        sa.Column("valid_from", TS, nullable=False),
        sa.Column("valid_to", TS, nullable=True),
        sa.Column(
            "superseded_by",
            sa.String(40),
            sa.ForeignKey("memories.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("embedding", _embedding_type(dialect), nullable=True),
        sa.Column("embedding_model", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_memories_owner", "memories", ["tenant_id", "persona_id", "user_id"])
    op.create_index(
        "ix_memories_embedding",
        "memories",
        ["embedding"],
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_cosine_ops"},
        sqlite_where=sa.text("0"),
    )
    if dialect == "postgresql":
        op.execute("ALTER TABLE memories ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE memories FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {POLICY} ON memories USING ({CONDITION}) WITH CHECK ({CONDITION})"
        )


def downgrade() -> None:
    op.drop_index("ix_memories_embedding", table_name="memories")
    op.drop_index("ix_memories_owner", table_name="memories")
    op.drop_table("memories")
