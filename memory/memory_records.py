"""Memory items as values: records, new items, validation and the shared SQL pieces.

:class:`MemoryRecord` (an item as stored) and :class:`NewMemory` (an item to
add) are what :class:`memory.memories.MemoryStore` takes and hands out; this
module also holds the row <-> record conversions, the write validation and the
filters that the store and the vector search (:mod:`memory.vector_search`)
share. Nothing here touches a database connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select

from memory.ids import new_id
from memory.models import EMBEDDING_DIMENSIONS, Memory, aware

# A SELECT of any columns (SQLAlchemy 2.1's Select is variadic).
AnySelect = Select[*tuple[Any, ...]]

# A source reference ``key:<k>`` names the fact an item states (agents/memory.py
# writes ``key:home``, ``key:name``, ...). At most one live item of a persona
# about a user has a given key: a new one supersedes the old (docs/memory.md).
KEY_PREFIX = "key:"
MAX_KEY_LENGTH = 200

# turn: an episodic item (one dialog turn, as said); fact / preference / event:
# semantic items extracted from turns; summary: a rolling summary of older history.
KINDS = ("turn", "fact", "preference", "event", "summary")

# The columns of a record (everything but the embedding itself).
RECORD_COLUMNS = (
    Memory.id,
    Memory.tenant_id,
    Memory.persona_id,
    Memory.user_id,
    Memory.kind,
    Memory.text,
    Memory.importance,
    Memory.pinned,
    Memory.source_message_ids,
    Memory.source_refs,
    Memory.valid_from,
    Memory.valid_to,
    Memory.superseded_by,
    Memory.embedding_model,
    (Memory.embedding.is_not(None)).label("has_embedding"),
    Memory.created_at,
    Memory.updated_at,
    Memory.supersede_key,
)


@dataclass(frozen=True)
class MemoryRecord:
    """One memory item, as stored. ``valid_to`` is set once it has been superseded."""

    id: str
    tenant_id: str
    persona_id: str
    user_id: str
    kind: str
    text: str
    importance: float
    pinned: bool
    source_message_ids: tuple[str, ...]
    source_refs: tuple[str, ...]
    valid_from: datetime
    valid_to: datetime | None
    superseded_by: str | None
    embedding_model: str | None
    has_embedding: bool
    created_at: datetime
    updated_at: datetime
    # The fact this item states (from a ``key:`` source reference), if any.
    supersede_key: str | None = None

    @property
    def live(self) -> bool:
        """Still valid: not superseded or retired."""
        return self.valid_to is None

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "persona_id": self.persona_id,
            "user_id": self.user_id,
            "kind": self.kind,
            "text": self.text,
            "importance": self.importance,
            "pinned": self.pinned,
            "source_message_ids": list(self.source_message_ids),
            "source_refs": list(self.source_refs),
            "valid_from": self.valid_from.isoformat(),
            "valid_to": self.valid_to.isoformat() if self.valid_to else None,
            "superseded_by": self.superseded_by,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class NewMemory:
    """A memory item to add (see :meth:`MemoryStore.add_many`)."""

    persona_id: str
    user_id: str
    text: str
    kind: str = "fact"
    importance: float = 0.5
    pinned: bool = False
    source_message_ids: Sequence[str] = ()
    source_refs: Sequence[str] = ()
    valid_from: datetime | None = None
    embedding: Sequence[float] | None = field(default=None, repr=False)
    embedding_model: str | None = None
    id: str | None = None

    @property
    def key(self) -> str | None:
        """The supersede key: the first ``key:<k>`` source reference, without the prefix."""
        return key_of(self.source_refs)


# -- SQL pieces, validation, conversions ------------------------------------------


def key_of(source_refs: Iterable[str]) -> str | None:
    """The key of the first ``key:<k>`` reference (``None`` without one)."""
    for ref in source_refs:
        if isinstance(ref, str) and ref.startswith(KEY_PREFIX) and len(ref) > len(KEY_PREFIX):
            key = ref[len(KEY_PREFIX) :]
            if len(key) > MAX_KEY_LENGTH:
                raise ValueError(f"a supersede key has at most {MAX_KEY_LENGTH} characters")
            return key
    return None


def select_records(tenant_id: str) -> AnySelect:
    return select(*RECORD_COLUMNS).where(Memory.tenant_id == tenant_id)


def filtered(
    q: AnySelect,
    *,
    tenant_id: str | None = None,
    persona_id: str | None = None,
    user_id: str | None = None,
    kinds: str | Sequence[str] | None = None,
    pinned: bool | None = None,
    include_superseded: bool = False,
) -> AnySelect:
    if tenant_id is not None:
        q = q.where(Memory.tenant_id == tenant_id)
    if persona_id is not None:
        q = q.where(Memory.persona_id == persona_id)
    if user_id is not None:
        q = q.where(Memory.user_id == user_id)
    if kinds is not None:
        wanted = [kinds] if isinstance(kinds, str) else list(kinds)
        q = q.where(Memory.kind.in_(wanted))
    if pinned is not None:
        q = q.where(Memory.pinned.is_(pinned))
    if not include_superseded:
        q = q.where(Memory.valid_to.is_(None))
    return q


def ordered(pairs: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    rounded = [(mid, round(sim, 6)) for mid, sim in pairs]
    rounded.sort(key=lambda p: (-p[1], p[0]))
    return rounded


def rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def utc(value: datetime | None, default: datetime) -> datetime:
    if value is None:
        return default
    # SQLite keeps no zone: store UTC everywhere so comparisons and ordering agree.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def check_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a memory needs a non-empty text")
    return text


def check_importance(importance: float) -> float:
    value = float(importance)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"importance must be between 0 and 1, got {importance}")
    return value


def check_embedding(
    embedding: Sequence[float], dimensions: int = EMBEDDING_DIMENSIONS
) -> list[float]:
    values = [float(v) for v in embedding]
    if len(values) != dimensions:
        raise ValueError(
            f"embedding has {len(values)} dimensions; memories store {dimensions} "
            "(the configured embedder decides the size, see docs/memory.md)"
        )
    return values


def new_row(
    tenant_id: str,
    item: NewMemory,
    now: datetime,
    *,
    default_from: datetime | None = None,
    key: str | None = None,
    dimensions: int = EMBEDDING_DIMENSIONS,
) -> dict[str, Any]:
    """The column values of a new item, validated; ``key`` overrides the item's own key."""
    if item.kind not in KINDS:
        raise ValueError(f"unknown memory kind {item.kind!r}; one of {', '.join(KINDS)}")
    embedding = check_embedding(item.embedding, dimensions) if item.embedding is not None else None
    return {
        "id": item.id or new_id("mem"),
        "tenant_id": tenant_id,
        "persona_id": item.persona_id,
        "user_id": item.user_id,
        "kind": item.kind,
        "text": check_text(item.text),
        "importance": check_importance(item.importance),
        "pinned": bool(item.pinned),
        "source_message_ids": [str(x) for x in item.source_message_ids],
        "source_refs": [str(x) for x in item.source_refs],
        "valid_from": utc(item.valid_from, default_from or now),
        "valid_to": None,
        "superseded_by": None,
        "embedding": embedding,
        "embedding_model": item.embedding_model if embedding is not None else None,
        "created_at": now,
        "updated_at": now,
        "supersede_key": key if key is not None else item.key,
    }


def record_from_row(row: dict[str, Any]) -> MemoryRecord:
    return MemoryRecord(
        id=row["id"],
        tenant_id=row["tenant_id"],
        persona_id=row["persona_id"],
        user_id=row["user_id"],
        kind=row["kind"],
        text=row["text"],
        importance=row["importance"],
        pinned=row["pinned"],
        source_message_ids=tuple(row["source_message_ids"]),
        source_refs=tuple(row["source_refs"]),
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        superseded_by=row["superseded_by"],
        embedding_model=row["embedding_model"],
        has_embedding=row["embedding"] is not None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        supersede_key=row["supersede_key"],
    )


def record_from_result(row: Any) -> MemoryRecord:
    return MemoryRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        persona_id=row.persona_id,
        user_id=row.user_id,
        kind=row.kind,
        text=row.text,
        importance=float(row.importance),
        pinned=bool(row.pinned),
        source_message_ids=tuple(row.source_message_ids or ()),
        source_refs=tuple(row.source_refs or ()),
        valid_from=aware(row.valid_from),
        valid_to=aware(row.valid_to) if row.valid_to else None,
        superseded_by=row.superseded_by,
        embedding_model=row.embedding_model,
        has_embedding=bool(row.has_embedding),
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
        supersede_key=row.supersede_key,
    )
