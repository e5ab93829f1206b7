"""Voice cloning: the ``voices``, ``voice_consents`` and ``voice_audit`` tables.

``voices`` holds one cloned voice per row (provider, provider voice id,
status, stored reference audio, who created and revoked it);
``voice_consents`` the speaker's consent, one per voice; ``voice_audit`` the
append-only trail of what happened to each voice. The models are in
memory/voices_store.py; docs/voice-cloning.md describes the workflow.

On Postgres all three get the same row-level security as every other
tenant-owned table (migration 0002). On both databases a trigger refuses
``UPDATE`` on ``voice_audit``: an audit row, once written, stays as written.
Deletes stay possible so that removing a tenant still cascades.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
POLICY = "salon_tenant_isolation"
CONDITION = (
    "tenant_id = current_setting('salon.tenant_id', true)"
    " OR current_setting('salon.scope', true) = 'system'"
)
TABLES = ("voices", "voice_consents", "voice_audit")
TRIGGER = "voice_audit_append_only"
PG_FUNCTION = "salon_voice_audit_append_only"


def _fk(column: str, target: str, *, primary_key: bool = False) -> sa.Column[str]:
    return sa.Column(
        column,
        sa.String(40),
        sa.ForeignKey(target, ondelete="CASCADE"),
        nullable=False,
        primary_key=primary_key,
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "voices",
        sa.Column("id", sa.String(40), primary_key=True),
        _fk("tenant_id", "tenants.id"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("provider_voice_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("requires_verification", sa.Boolean(), nullable=False),
        sa.Column("audio_keys", sa.JSON(), nullable=False),
        sa.Column("reference_key", sa.String(512), nullable=True),
        sa.Column("error_code", sa.String(40), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revoked_by", sa.String(200), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.Column("provider_deleted_at", TS, nullable=True),
        sa.Column("audio_deleted_at", TS, nullable=True),
    )
    op.create_index("ix_voices_tenant_created", "voices", ["tenant_id", "created_at"])
    op.create_table(
        "voice_consents",
        _fk("voice_id", "voices.id", primary_key=True),
        _fk("tenant_id", "tenants.id"),
        sa.Column("speaker_name", sa.String(200), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("scope", sa.JSON(), nullable=False),
        sa.Column("obtained_at", TS, nullable=False),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("evidence_key", sa.String(512), nullable=True),
        sa.Column("evidence_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "voice_audit",
        sa.Column("id", sa.String(40), primary_key=True),
        _fk("tenant_id", "tenants.id"),
        _fk("voice_id", "voices.id"),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
    )
    op.create_index("ix_voice_audit_voice", "voice_audit", ["tenant_id", "voice_id", "at"])
    if dialect == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(
                f"CREATE POLICY {POLICY} ON {table} USING ({CONDITION}) WITH CHECK ({CONDITION})"
            )
        op.execute(
            f"CREATE OR REPLACE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'voice_audit is append-only'; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE ON voice_audit"
            f" FOR EACH ROW EXECUTE FUNCTION {PG_FUNCTION}()"
        )
    elif dialect == "sqlite":
        op.execute(
            f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE ON voice_audit"
            " BEGIN SELECT RAISE(ABORT, 'voice_audit is append-only'); END"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    # Dropping the table drops its trigger; the Postgres function is separate.
    op.drop_index("ix_voice_audit_voice", table_name="voice_audit")
    op.drop_table("voice_audit")
    if dialect == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {PG_FUNCTION}()")
    op.drop_table("voice_consents")
    op.drop_index("ix_voices_tenant_created", table_name="voices")
    op.drop_table("voices")
