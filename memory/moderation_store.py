"""Moderation storage: each tenant's policy and the queue of flags for review.

Two tenant-owned tables (migration 0006), kept in their own module so the
moderation part owns its schema; they share :class:`memory.models.Base`, so
the migration/model consistency check covers them. Every transaction goes
through ``Store._tx(tenant_id)``: on Postgres the row-level security policy
of migration 0006 hides other tenants' rows a second time.

A flag holds only an excerpt of the text that raised it, already masked
(emails, phones and card numbers are never written here in the clear).
Deleting a user, persona or conversation deletes their flags (cascade).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String, Text, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from memory.ids import new_id
from memory.models import Base, aware, utcnow
from memory.store import Store

FLAG_STATUSES = ("open", "reviewed", "dismissed")


class ModerationPolicyRow(Base):
    """A tenant's moderation policy as JSON (agents/moderation/policy.py validates it)."""

    __tablename__ = "moderation_policies"
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModerationFlag(Base):
    """Something a moderation check wants a person to look at (or that it blocked)."""

    __tablename__ = "moderation_flags"
    __table_args__ = (
        # The review queue: newest first within a status (ids are time-ordered).
        Index("ix_moderation_flags_queue", "tenant_id", "status", "id"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    persona_id: Mapped[str | None] = mapped_column(
        ForeignKey("personas.id", ondelete="CASCADE"), nullable=True
    )
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    conversation_id: Mapped[str | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), nullable=True
    )
    # Not a foreign key: a blocked input or output has no stored message.
    message_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    direction: Mapped[str] = mapped_column(String(20))  # input | output | memory
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    action: Mapped[str] = mapped_column(String(20))  # flag | block | mask
    excerpt: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="open")
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class FlagRecord:
    id: str
    tenant_id: str
    persona_id: str | None
    user_id: str | None
    conversation_id: str | None
    message_id: str | None
    direction: str
    categories: list[str]
    action: str
    excerpt: str
    status: str
    created_at: datetime
    details: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    resolved_at: datetime | None = None

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "persona_id": self.persona_id,
            "user_id": self.user_id,
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "direction": self.direction,
            "categories": list(self.categories),
            "action": self.action,
            "excerpt": self.excerpt,
            "details": dict(self.details),
            "status": self.status,
            "note": self.note,
            "created_at": aware(self.created_at).isoformat(),
            "resolved_at": aware(self.resolved_at).isoformat() if self.resolved_at else None,
        }


@dataclass(frozen=True)
class NewFlag:
    direction: str
    categories: list[str]
    action: str
    excerpt: str
    persona_id: str | None = None
    user_id: str | None = None
    conversation_id: str | None = None
    message_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class ModerationStore:
    """Tenant-scoped policies and flags, on the database of a :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- policy -----------------------------------------------------------------

    async def get_policy(self, tenant_id: str) -> dict[str, Any] | None:
        """The stored policy JSON of the tenant, or None (the defaults apply)."""
        async with self.store._tx(tenant_id) as s:
            row = await s.get(ModerationPolicyRow, tenant_id)
            return dict(row.policy) if row is not None else None

    async def put_policy(self, tenant_id: str, policy: dict[str, Any]) -> None:
        """Replace the tenant's policy (an upsert that works the same on both databases)."""
        for attempt in range(2):
            try:
                async with self.store._tx(tenant_id) as s:
                    row = await s.get(ModerationPolicyRow, tenant_id, with_for_update=True)
                    if row is None:
                        s.add(ModerationPolicyRow(tenant_id=tenant_id, policy=policy))
                    else:
                        row.policy = policy
                        row.updated_at = utcnow()
                return
            except IntegrityError:
                # Two first PUTs at once both found no row: the loser updates.
                if attempt:
                    raise

    # -- flags --------------------------------------------------------------------

    async def add_flag(self, tenant_id: str, flag: NewFlag) -> FlagRecord:
        async with self.store._tx(tenant_id) as s:
            row = ModerationFlag(
                id=new_id("flag"),
                tenant_id=tenant_id,
                persona_id=flag.persona_id,
                user_id=flag.user_id,
                conversation_id=flag.conversation_id,
                message_id=flag.message_id,
                direction=flag.direction,
                categories=list(flag.categories),
                action=flag.action,
                excerpt=flag.excerpt,
                details=dict(flag.details),
                status="open",
                created_at=utcnow(),
            )
            s.add(row)
        return _record(row)

    async def get_flag(self, tenant_id: str, flag_id: str) -> FlagRecord | None:
        async with self.store._tx(tenant_id) as s:
            row = (
                await s.execute(
                    select(ModerationFlag).where(
                        ModerationFlag.tenant_id == tenant_id, ModerationFlag.id == flag_id
                    )
                )
            ).scalar_one_or_none()
            return _record(row) if row is not None else None

    async def list_flags(
        self,
        tenant_id: str,
        *,
        status: str | None = None,
        persona_id: str | None = None,
        user_id: str | None = None,
        conversation_id: str | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> list[FlagRecord]:
        """Newest first; ``before`` (a flag id) continues after the previous page.

        A keyset cursor rather than an offset: flags are resolved while an
        operator pages through the open ones, and offsets would skip items.
        """
        f = ModerationFlag
        query = select(f).where(f.tenant_id == tenant_id)
        if status is not None:
            query = query.where(f.status == status)
        if persona_id is not None:
            query = query.where(f.persona_id == persona_id)
        if user_id is not None:
            query = query.where(f.user_id == user_id)
        if conversation_id is not None:
            query = query.where(f.conversation_id == conversation_id)
        if before is not None:
            query = query.where(f.id < before)
        query = query.order_by(f.id.desc()).limit(limit)
        async with self.store._tx(tenant_id) as s:
            return [_record(r) for r in (await s.execute(query)).scalars()]

    async def resolve_flag(
        self, tenant_id: str, flag_id: str, *, status: str, note: str | None = None
    ) -> FlagRecord | None:
        """Set a flag's status (``reviewed``/``dismissed``, or ``open`` to reopen it)."""
        if status not in FLAG_STATUSES:
            raise ValueError(f"status must be one of {', '.join(FLAG_STATUSES)}")
        values: dict[str, Any] = {
            "status": status,
            "resolved_at": None if status == "open" else utcnow(),
        }
        if note is not None:
            values["note"] = note
        async with self.store._tx(tenant_id) as s:
            await s.execute(
                update(ModerationFlag)
                .where(ModerationFlag.tenant_id == tenant_id, ModerationFlag.id == flag_id)
                .values(**values)
            )
        return await self.get_flag(tenant_id, flag_id)


def _record(row: ModerationFlag) -> FlagRecord:
    return FlagRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        persona_id=row.persona_id,
        user_id=row.user_id,
        conversation_id=row.conversation_id,
        message_id=row.message_id,
        direction=row.direction,
        categories=list(row.categories or []),
        action=row.action,
        excerpt=row.excerpt,
        status=row.status,
        created_at=row.created_at,
        details=dict(row.details or {}),
        note=row.note,
        resolved_at=row.resolved_at,
    )
