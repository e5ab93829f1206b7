"""Postgres functions for the per-message direct path (memory/pg_direct.py).

Each sets the tenant for its own transaction and runs one statement, so a
per-message operation is one statement in one round trip instead of BEGIN,
the row-security settings, the statement and COMMIT. They run as the caller
(SECURITY INVOKER, the default): row-level security applies inside exactly as
outside, and the setting is transaction-local as everywhere else (safe behind
PgBouncer in transaction mode). Nothing on SQLite.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Each begins with the tenant for this transaction only: the same two settings
# memory/store.py sets.
FUNCTIONS = {
    "salon_insert_message(text, text, text, text, text, text, text, text, timestamptz)": """
CREATE FUNCTION salon_insert_message(
  p_id text, p_tenant text, p_conversation text, p_role text, p_content text,
  p_client_id text, p_status text, p_response_id text, p_created_at timestamptz
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('salon.tenant_id', p_tenant, true);
  PERFORM set_config('salon.scope', '', true);
  INSERT INTO messages (id, tenant_id, conversation_id, role, content, client_id, status,
                        response_id, created_at)
  VALUES (p_id, p_tenant, p_conversation, p_role, p_content, p_client_id, p_status,
          p_response_id, p_created_at);
END $$
""",
    "salon_recent_messages(text, text, integer)": """
CREATE FUNCTION salon_recent_messages(p_tenant text, p_conversation text, p_limit integer)
RETURNS SETOF messages LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('salon.tenant_id', p_tenant, true);
  PERFORM set_config('salon.scope', '', true);
  RETURN QUERY SELECT * FROM messages
    WHERE tenant_id = p_tenant AND conversation_id = p_conversation
    ORDER BY created_at DESC, id DESC LIMIT p_limit;
END $$
""",
    "salon_live_summaries(text, text, text, text, integer)": """
CREATE FUNCTION salon_live_summaries(
  p_tenant text, p_persona text, p_user text, p_ref_pattern text, p_limit integer
) RETURNS SETOF memories LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('salon.tenant_id', p_tenant, true);
  PERFORM set_config('salon.scope', '', true);
  RETURN QUERY SELECT * FROM memories
    WHERE tenant_id = p_tenant AND persona_id = p_persona AND user_id = p_user
      AND kind = 'summary' AND valid_to IS NULL
      AND source_refs::text LIKE p_ref_pattern ESCAPE '/'
    ORDER BY valid_from DESC, id DESC LIMIT p_limit;
END $$
""",
    "salon_raise_last_seq(text, text, integer, timestamptz)": """
CREATE FUNCTION salon_raise_last_seq(
  p_tenant text, p_conversation text, p_seq integer, p_now timestamptz
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('salon.tenant_id', p_tenant, true);
  PERFORM set_config('salon.scope', '', true);
  UPDATE conversations SET last_seq = p_seq, updated_at = p_now
    WHERE tenant_id = p_tenant AND id = p_conversation AND last_seq < p_seq;
END $$
""",
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for create in FUNCTIONS.values():
            op.execute(create)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for signature in FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {signature}")
