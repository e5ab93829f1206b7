"""What the operator console keeps: operator accounts and each tenant's branding.

Two tenant-owned tables (migration 0012): ``operators`` (people who sign in to
``/console`` with an email and a password; a role per tenant) and
``tenant_branding`` (name, logo and colours of the console and the chat
widget). Passwords arrive here already hashed (server/console_auth.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String, Text, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from memory.ids import new_id
from memory.models import ApiKey, Base, Conversation, Message, Persona, User, aware, utcnow
from memory.store import Conflict, Store, _conversation_record

ROLES = ("viewer", "moderator", "admin")


class Operator(Base):
    """A console account; ``email`` is unique across tenants (it is how sign-in finds one)."""

    __tablename__ = "operators"
    __table_args__ = (Index("ix_operators_tenant", "tenant_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TenantBranding(Base):
    __tablename__ = "tenant_branding"
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(100))
    logo: Mapped[str | None] = mapped_column(Text, nullable=True)
    colors: Mapped[dict[str, str]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@dataclass(frozen=True)
class OperatorRecord:
    id: str
    tenant_id: str
    email: str
    name: str
    role: str
    password_hash: str = field(repr=False)
    created_at: datetime
    disabled: bool

    def to_public(self) -> dict[str, Any]:
        """The API's view: never the password hash."""
        return {
            "id": self.id,
            "object": "operator",
            "email": self.email,
            "name": self.name,
            "role": self.role,
            "disabled": self.disabled,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class BrandingRecord:
    name: str
    logo: str | None
    colors: dict[str, str]


def _operator(row: Operator) -> OperatorRecord:
    return OperatorRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        email=row.email,
        name=row.name,
        role=row.role,
        password_hash=row.password_hash,
        created_at=aware(row.created_at) or utcnow(),
        disabled=row.disabled_at is not None,
    )


class ConsoleStore:
    """Operators and branding; every query is scoped to one tenant but sign-in's lookup."""

    def __init__(self, store: Store) -> None:
        self._tx = store._tx

    # -- operators ------------------------------------------------------------

    async def create_operator(
        self, tenant_id: str, *, email: str, name: str, role: str, password_hash: str
    ) -> OperatorRecord:
        """Create an account; a taken email (in any tenant) raises :class:`Conflict`."""
        now = utcnow()
        row = Operator(
            id=new_id("opr"),
            tenant_id=tenant_id,
            email=email.strip().lower(),
            name=name,
            role=role,
            password_hash=password_hash,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._tx(tenant_id) as s:
                s.add(row)
        except IntegrityError as exc:
            raise Conflict(f"an operator with email {email!r} already exists") from exc
        return _operator(row)

    async def find_operator_by_email(self, email: str) -> OperatorRecord | None:
        """Sign-in's lookup, across tenants (the email names the tenant)."""
        async with self._tx(system=True) as s:
            row = (
                await s.execute(select(Operator).where(Operator.email == email.strip().lower()))
            ).scalar_one_or_none()
        return _operator(row) if row else None

    async def get_operator(self, tenant_id: str, operator_id: str) -> OperatorRecord | None:
        async with self._tx(tenant_id) as s:
            row = await s.get(Operator, operator_id)
        return _operator(row) if row and row.tenant_id == tenant_id else None

    async def list_operators(self, tenant_id: str) -> list[OperatorRecord]:
        async with self._tx(tenant_id) as s:
            rows = (
                await s.execute(
                    select(Operator)
                    .where(Operator.tenant_id == tenant_id)
                    .order_by(Operator.created_at, Operator.id)
                )
            ).scalars()
            return [_operator(r) for r in rows]

    async def update_operator(
        self,
        tenant_id: str,
        operator_id: str,
        *,
        name: str | None = None,
        role: str | None = None,
        password_hash: str | None = None,
        disabled: bool | None = None,
    ) -> OperatorRecord | None:
        async with self._tx(tenant_id) as s:
            row = await s.get(Operator, operator_id)
            if row is None or row.tenant_id != tenant_id:
                return None
            if name is not None:
                row.name = name
            if role is not None:
                row.role = role
            if password_hash is not None:
                row.password_hash = password_hash
            if disabled is not None:
                row.disabled_at = (row.disabled_at or utcnow()) if disabled else None
            row.updated_at = utcnow()
            return _operator(row)

    async def delete_operator(self, tenant_id: str, operator_id: str) -> bool:
        async with self._tx(tenant_id) as s:
            row = await s.get(Operator, operator_id)
            if row is None or row.tenant_id != tenant_id:
                return False
            await s.delete(row)
            return True

    async def api_key_role(self, tenant_id: str, key_id: str) -> str | None:
        """The role of a live (not revoked) API key of this tenant, or None."""
        async with self._tx(tenant_id) as s:
            row = await s.get(ApiKey, key_id)
        if row is None or row.tenant_id != tenant_id or row.revoked_at is not None:
            return None
        return row.role

    # -- branding -------------------------------------------------------------

    async def get_branding(self, tenant_id: str) -> BrandingRecord | None:
        async with self._tx(tenant_id) as s:
            row = await s.get(TenantBranding, tenant_id)
        return BrandingRecord(row.name, row.logo, dict(row.colors)) if row else None

    async def put_branding(
        self, tenant_id: str, *, name: str, logo: str | None, colors: dict[str, str]
    ) -> BrandingRecord:
        async with self._tx(tenant_id) as s:
            row = await s.get(TenantBranding, tenant_id)
            if row is None:
                row = TenantBranding(tenant_id=tenant_id)
                s.add(row)
            row.name, row.logo, row.colors, row.updated_at = name, logo, dict(colors), utcnow()
        return BrandingRecord(name, logo, dict(colors))


@dataclass(frozen=True)
class ActiveConversation:
    """A conversation as the console lists it: who, with whom, and its last message."""

    conversation: Any  # memory.records.ConversationRecord
    persona: dict[str, str]
    user: dict[str, str | None]
    updated_at: datetime
    last_message: dict[str, Any] | None


async def recent_conversations(
    store: Store, tenant_id: str, *, since: datetime | None, limit: int, preview_chars: int = 160
) -> list[ActiveConversation]:
    """The tenant's conversations by latest activity (newest first), updated after ``since``."""
    async with store._tx(tenant_id) as s:
        query = (
            select(Conversation, Persona.slug, Persona.name, User.external_id, User.name)
            .join(Persona, Persona.id == Conversation.persona_id)
            .join(User, User.id == Conversation.user_id)
            .where(Conversation.tenant_id == tenant_id)
            .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
            .limit(limit)
        )
        if since is not None:
            query = query.where(
                or_(Conversation.updated_at >= since, Conversation.created_at >= since)
            )
        rows = (await s.execute(query)).all()
        ids = [row[0].id for row in rows]
        latest: dict[str, Any] = {}
        if ids:
            ranked = (
                select(
                    Message.conversation_id,
                    Message.id,
                    Message.role,
                    Message.content,
                    Message.created_at,
                    func.row_number()
                    .over(
                        partition_by=Message.conversation_id,
                        order_by=(Message.created_at.desc(), Message.id.desc()),
                    )
                    .label("n"),
                )
                .where(Message.tenant_id == tenant_id, Message.conversation_id.in_(ids))
                .subquery()
            )
            for found in (await s.execute(select(ranked).where(ranked.c.n == 1))).all():
                latest[found.conversation_id] = found
    result = []
    for conv, slug, persona_name, external_id, user_name in rows:
        m: Any = latest.get(conv.id)
        last = None
        if m is not None:
            text = m.content
            last = {
                "id": m.id,
                "role": m.role,
                "preview": text if len(text) <= preview_chars else text[: preview_chars - 1] + "…",
                "created_at": (aware(m.created_at) or utcnow()).isoformat(),
            }
        updated = aware(conv.updated_at) or utcnow()
        if m is not None:  # a message after the last recorded reply is activity too
            updated = max(updated, aware(m.created_at) or updated)
        result.append(
            ActiveConversation(
                conversation=_conversation_record(conv),
                persona={"id": conv.persona_id, "slug": slug, "name": persona_name},
                user={"id": external_id, "name": user_name},
                updated_at=updated,
                last_message=last,
            )
        )
    return result


async def user_texts(
    store: Store,
    tenant_id: str,
    *,
    start: datetime,
    end: datetime,
    persona_id: str | None = None,
    limit: int = 2000,
) -> list[str]:
    """What people wrote in the tenant's conversations between ``start`` and ``end``,
    newest first, at most ``limit`` messages (the analytics' topics read these)."""
    query = (
        select(Message.content)
        .where(
            Message.tenant_id == tenant_id,
            Message.role == "user",
            Message.created_at >= start,
            Message.created_at < end,
        )
        .order_by(Message.created_at.desc())
        .limit(limit)
    )
    if persona_id is not None:
        query = query.join(Conversation, Conversation.id == Message.conversation_id).where(
            Conversation.persona_id == persona_id
        )
    async with store._tx(tenant_id) as s:
        return [str(text) for text in (await s.execute(query)).scalars()]
