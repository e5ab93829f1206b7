"""Memories: one live item per fact (``supersede_key`` + a unique partial index).

A fact the person states has a key (``key:home`` in ``source_refs``, written
by agents/memory.py); a new fact with the same key supersedes the live one.
Two replicas remembering for the same user at once could both find no live
item and both insert one, leaving two live versions. This migration gives
the key its own column and a unique index over the live keyed items
(``valid_to IS NULL``), so the database refuses the second one and
:class:`memory.memories.MemoryStore` retries it as a supersede.

Existing rows get their key from ``source_refs``; where the race already
left several live items with one key, the newest stays live and the others
are retired into its history (``valid_to``, ``superseded_by``) before the
index is created.

Revision ID: 0004
Revises: 0003
"""

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

KEY_PREFIX = "key:"
LIVE_KEYED = "valid_to IS NULL AND supersede_key IS NOT NULL"

_memories = sa.table(
    "memories",
    sa.column("id", sa.String),
    sa.column("tenant_id", sa.String),
    sa.column("persona_id", sa.String),
    sa.column("user_id", sa.String),
    sa.column("source_refs", sa.JSON),
    sa.column("valid_from", sa.DateTime(timezone=True)),
    sa.column("valid_to", sa.DateTime(timezone=True)),
    sa.column("superseded_by", sa.String),
    sa.column("supersede_key", sa.String),
)


def _key(refs: Any) -> str | None:
    for ref in refs or ():
        if isinstance(ref, str) and ref.startswith(KEY_PREFIX) and len(ref) > len(KEY_PREFIX):
            return ref[len(KEY_PREFIX) :][:200]
    return None


def _backfill(bind: sa.engine.Connection) -> None:
    m = _memories.c
    rows = bind.execute(
        sa.select(
            m.id, m.tenant_id, m.persona_id, m.user_id, m.source_refs, m.valid_from, m.valid_to
        )
        .where(sa.cast(m.source_refs, sa.Text).like(f"%{KEY_PREFIX}%"))
        .order_by(m.valid_from, m.id)
    ).all()
    live: dict[tuple[str, str, str, str], list[Any]] = defaultdict(list)
    for row in rows:
        key = _key(row.source_refs)
        if key is None:
            continue
        bind.execute(sa.update(_memories).where(m.id == row.id).values(supersede_key=key))
        if row.valid_to is None:
            live[(row.tenant_id, row.persona_id, row.user_id, key)].append(row)
    for versions in live.values():
        # Oldest first: each older live version is retired into the newest one.
        newest = versions[-1]
        for old in versions[:-1]:
            bind.execute(
                sa.update(_memories)
                .where(m.id == old.id)
                .values(valid_to=newest.valid_from, superseded_by=newest.id)
            )


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("memories", sa.Column("supersede_key", sa.String(200), nullable=True))
    if bind.dialect.name == "postgresql":
        # Row-level security (FORCE) hides every row from a transaction without
        # a tenant; the backfill has to see all tenants (transaction-local).
        bind.execute(sa.text("SELECT set_config('salon.scope', 'system', true)"))
    _backfill(bind)
    op.create_index(
        "ux_memories_live_key",
        "memories",
        ["tenant_id", "persona_id", "user_id", "supersede_key"],
        unique=True,
        postgresql_where=sa.text(LIVE_KEYED),
        sqlite_where=sa.text(LIVE_KEYED),
    )


def downgrade() -> None:
    op.drop_index("ux_memories_live_key", table_name="memories")
    with op.batch_alter_table("memories") as batch:
        batch.drop_column("supersede_key")
