"""ORM tables. Every tenant-owned row carries ``tenant_id`` from day one.

The schema itself is created by Alembic migrations (memory/migrations); these
classes describe it for queries and must stay in step with the migrations
(tests/test_store_contract.py checks that, on SQLite and Postgres).
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine


@overload
def aware(value: datetime) -> datetime: ...
@overload
def aware(value: None) -> None: ...
def aware(value: datetime | None) -> datetime | None:
    """A datetime as read back from either database: SQLite keeps no zone, and every
    timestamp is written in UTC, so a naive one is UTC (the same value Postgres gives)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key; only its SHA-256 is stored (keys are 256-bit random, so no KDF is needed)."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(20), default="admin")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ServerSecret(Base):
    """Process-wide secrets shared by replicas (e.g. the session-token signing key)."""

    __tablename__ = "server_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class Persona(Base):
    __tablename__ = "personas"
    __table_args__ = (UniqueConstraint("tenant_id", "slug", name="uq_personas_tenant_slug"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    slug: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    """A person talking to personas, identified by the tenant's own id for them."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "external_id", name="uq_users_tenant_ext"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_lookup", "tenant_id", "persona_id", "user_id"),
        # the console's recently active conversations (migration 0012)
        Index("ix_conversations_updated", "tenant_id", "updated_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    persona_id: Mapped[str] = mapped_column(ForeignKey("personas.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(20), default="ws")
    # Highest event seq known to have been issued; lets seq keep rising after
    # the hot event log has expired or been restarted.
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "client_id", name="uq_messages_client_id"),
        Index("ix_messages_conversation", "conversation_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text)
    # The client's id for a user message: the idempotency key of message.create.
    client_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # complete | cancelled | error | interrupted
    status: Mapped[str] = mapped_column(String(20), default="complete")
    response_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# -- long-term memory (docs/memory.md) ----------------------------------------

# Size of the stored embeddings as migrated: all-MiniLM-L6-v2, the embedded
# default. On Postgres it is the column type (``vector(384)``, which the HNSW
# index needs); another configured embedder's size is adopted at start
# (memory/embedding_space.py).
EMBEDDING_DIMENSIONS = 384


class EmbeddingVector(TypeDecorator[list[float]]):
    """An embedding: pgvector ``vector(n)`` on Postgres, little-endian float32 bytes elsewhere.

    pgvector is imported only when a Postgres dialect asks for the type, so the
    embedded (SQLite) install does not need the ``postgres`` extra.
    """

    impl = LargeBinary
    cache_ok = True

    def __init__(self, dimensions: int | None = EMBEDDING_DIMENSIONS) -> None:
        # None: any size; the store checks vectors against the size it adopted
        # (memory/embedding_space.py), which the configured embedder decides.
        super().__init__()
        self.dimensions = dimensions

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from pgvector.sqlalchemy import Vector

            return dialect.type_descriptor(Vector(self.dimensions))
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        values = [float(v) for v in value]
        if self.dimensions is not None and len(values) != self.dimensions:
            raise ValueError(
                f"embedding has {len(values)} dimensions, the memories table stores "
                f"{self.dimensions}"
            )
        if dialect.name == "postgresql":
            return values  # pgvector's own bind processor writes the text form
        return struct.pack(f"<{len(values)}f", *values)

    def process_result_value(self, value: Any, dialect: Dialect) -> list[float] | None:
        if value is None:
            return None
        if isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
            return list(struct.unpack(f"<{len(data) // 4}f", data))
        return [float(v) for v in value]


class Memory(Base):
    """One long-term memory item of a persona about a user (docs/memory.md).

    ``kind``: ``turn`` (an episodic item: one dialog turn), ``fact``,
    ``preference``, ``event`` or ``summary``. A fact that changes is not
    edited in place: the old row gets ``valid_to`` and ``superseded_by`` and a
    new row carries the new value.
    """

    __tablename__ = "memories"
    __table_args__ = (
        Index("ix_memories_owner", "tenant_id", "persona_id", "user_id"),
        # The vector index: HNSW (cosine) on Postgres. SQLite has no vector
        # index (retrieval scans exactly), so there it is an empty partial
        # index (WHERE 0) that costs nothing and keeps one schema for both.
        Index(
            "ix_memories_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
            sqlite_where=sql_text("0"),
        ),
        # At most one live item per fact (supersede key) of a persona about a
        # user: two replicas that write the same fact at once cannot both
        # leave it live (migration 0004, docs/memory.md).
        Index(
            "ux_memories_live_key",
            "tenant_id",
            "persona_id",
            "user_id",
            "supersede_key",
            unique=True,
            postgresql_where=sql_text("valid_to IS NULL AND supersede_key IS NOT NULL"),
            sqlite_where=sql_text("valid_to IS NULL AND supersede_key IS NOT NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    persona_id: Mapped[str] = mapped_column(ForeignKey("personas.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    importance: Mapped[float] = mapped_column(Float, default=0.5)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    source_message_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Opaque references to where the item came from outside Salon (e.g. the
    # dia_ids of an imported transcript); the LoCoMo benchmark maps hits back by them.
    source_refs: Mapped[list[str]] = mapped_column(JSON, default=list)
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    superseded_by: Mapped[str | None] = mapped_column(
        ForeignKey("memories.id", ondelete="SET NULL"), nullable=True
    )
    embedding: Mapped[list[float] | None] = mapped_column(EmbeddingVector(None), nullable=True)
    # The model that produced ``embedding``: vectors of another model are not compared.
    embedding_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The fact the item states (a ``key:<k>`` source reference without the prefix).
    supersede_key: Mapped[str | None] = mapped_column(String(200), nullable=True)


# -- analysis (docs/analysis.md) ------------------------------------------------

# Plutchik's eight basic emotions, in the order the API lists them.
PLUTCHIK_EMOTIONS = (
    "joy",
    "trust",
    "fear",
    "surprise",
    "sadness",
    "disgust",
    "anger",
    "anticipation",
)
# The key of an aggregate row that covers every persona, user or channel.
ANY = "*"


class MessageAnalysis(Base):
    """Sentiment, emotions and language of one stored message (migration 0005).

    Written once per message by the ``analysis.message`` job; deleted with its
    message (and so when a user is forgotten).
    """

    __tablename__ = "message_analyses"
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    compound: Mapped[float] = mapped_column(Float)
    pos: Mapped[float] = mapped_column(Float)
    neu: Mapped[float] = mapped_column(Float)
    neg: Mapped[float] = mapped_column(Float)
    emotions: Mapped[dict[str, float]] = mapped_column(JSON)
    language: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Which analyzer produced it (``lexicon``, ``transformers:<model>``, ...).
    analyzer: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AnalysisBucket(Base):
    """Running sums of the analyses of one time bucket, for one slice of a tenant.

    A slice is a persona, a user and a channel, each either one value or
    :data:`ANY`; every analysis adds itself to the 8 slices it belongs to, for
    hour and day buckets, so any combination of filters is one range read of
    the primary key instead of a scan of messages (memory/analysis_store.py).
    """

    __tablename__ = "analysis_buckets"
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    granularity: Mapped[str] = mapped_column(String(8), primary_key=True)  # hour | day
    persona_key: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel_key: Mapped[str] = mapped_column(String(40), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    sum_compound: Mapped[float] = mapped_column(Float, default=0.0)
    sum_pos: Mapped[float] = mapped_column(Float, default=0.0)
    sum_neu: Mapped[float] = mapped_column(Float, default=0.0)
    sum_neg: Mapped[float] = mapped_column(Float, default=0.0)
    sum_joy: Mapped[float] = mapped_column(Float, default=0.0)
    sum_trust: Mapped[float] = mapped_column(Float, default=0.0)
    sum_fear: Mapped[float] = mapped_column(Float, default=0.0)
    sum_surprise: Mapped[float] = mapped_column(Float, default=0.0)
    sum_sadness: Mapped[float] = mapped_column(Float, default=0.0)
    sum_disgust: Mapped[float] = mapped_column(Float, default=0.0)
    sum_anger: Mapped[float] = mapped_column(Float, default=0.0)
    sum_anticipation: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
