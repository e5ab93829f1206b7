"""Comment automation tables (integrations/social, docs/integrations.md), migration 0010.

- ``social_apps``: a tenant's own platform app (Meta or X): its webhook
  secrets, encrypted (the caller encrypts; this layer stores text).
- ``social_accounts``: a connected account (an Instagram business account, a
  Facebook Page, an X user, a YouTube channel) mapped to a persona, with its
  reply policy, encrypted credentials and, for polled platforms, a cursor.
  One platform account belongs to one tenant.
- ``social_comments``: every comment routed to an account, once (unique per
  platform and comment id: the deduplication of deliveries), and the life of
  its reply: ``received`` -> ``processing`` -> ``ignored`` | ``pending`` (approval) |
  ``approved`` -> ``sending`` -> ``sent`` | ``retrying`` | ``failed``, or
  ``rejected``.
- ``social_deliveries``: the delivery log of webhook calls and polls
  (platform-wide, not tenant-owned: a delivery is refused before anyone
  knows whose it is), trimmed after ``SALON_SOCIAL_DEDUPE_HOURS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from memory.ids import new_id
from memory.models import Base, aware, utcnow
from memory.store import Store

COMMENT_STATES = (
    "received",
    "processing",
    "ignored",
    "pending",
    "approved",
    "sending",
    "retrying",
    "sent",
    "failed",
    "rejected",
)


class SocialApp(Base):
    __tablename__ = "social_apps"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(20))  # meta, x
    name: Mapped[str] = mapped_column(String(200))
    secrets: Mapped[str] = mapped_column(Text)  # encrypted JSON
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SocialAccount(Base):
    __tablename__ = "social_accounts"
    __table_args__ = (
        UniqueConstraint("platform", "account_id", name="uq_social_accounts_platform_account"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(20))  # instagram, facebook, x, youtube
    account_id: Mapped[str] = mapped_column(String(200))
    persona_id: Mapped[str] = mapped_column(ForeignKey("personas.id", ondelete="CASCADE"))
    app_id: Mapped[str | None] = mapped_column(
        ForeignKey("social_apps.id", ondelete="SET NULL"), nullable=True
    )
    name: Mapped[str] = mapped_column(String(200), default="")
    credentials: Mapped[str] = mapped_column(Text, default="")  # encrypted JSON
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    cursor: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    next_poll_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SocialComment(Base):
    __tablename__ = "social_comments"
    __table_args__ = (
        UniqueConstraint("platform", "comment_id", name="uq_social_comments_platform_comment"),
        Index("ix_social_comments_queue", "tenant_id", "status", "received_at"),
        Index("ix_social_comments_due", "status", "next_attempt_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    account_pk: Mapped[str] = mapped_column(ForeignKey("social_accounts.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(20))
    comment_id: Mapped[str] = mapped_column(String(200))
    post_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    parent_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    author_id: Mapped[str] = mapped_column(String(200))
    author_name: Mapped[str] = mapped_column(String(200), default="")
    author_is_account: Mapped[bool] = mapped_column(Boolean, default=False)
    kind: Mapped[str] = mapped_column(String(20), default="comment")
    text: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    conversation_id: Mapped[str | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), nullable=True
    )
    status: Mapped[str] = mapped_column(String(20), default="received")
    reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reply_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    reply_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SocialDelivery(Base):
    __tablename__ = "social_deliveries"
    __table_args__ = (Index("ix_social_deliveries_received", "received_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    platform: Mapped[str] = mapped_column(String(20))
    delivery_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(20))  # accepted, refused, duplicate
    code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    comments: Mapped[int] = mapped_column(Integer, default=0)
    new_comments: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def _aware(value: Any) -> Any:
    return aware(value) if isinstance(value, datetime) else value


@dataclass(frozen=True)
class AccountRecord:
    id: str
    tenant_id: str
    platform: str
    account_id: str
    persona_id: str
    app_id: str | None
    name: str
    credentials: str
    policy: dict[str, Any]
    enabled: bool
    cursor: dict[str, Any]
    next_poll_at: datetime | None
    created_at: datetime

    def to_public(self) -> dict[str, Any]:
        """The API's view: credentials never leave (only whether they are set)."""
        return {
            "id": self.id,
            "object": "social_account",
            "platform": self.platform,
            "account_id": self.account_id,
            "persona": self.persona_id,
            "app": self.app_id,
            "name": self.name,
            "policy": self.policy,
            "enabled": self.enabled,
            "has_credentials": bool(self.credentials),
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class CommentRecord:
    id: str
    tenant_id: str
    account_pk: str
    platform: str
    comment_id: str
    post_id: str | None
    parent_id: str | None
    author_id: str
    author_name: str
    author_is_account: bool
    kind: str
    text: str
    user_id: str | None
    conversation_id: str | None
    status: str
    reason: str | None
    reply_text: str | None
    reply_id: str | None
    attempts: int
    next_attempt_at: datetime | None
    error: str | None
    decided_by: str | None
    created_at: datetime | None
    received_at: datetime
    updated_at: datetime
    extra: dict[str, Any] = field(default_factory=dict)

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "social_comment",
            "platform": self.platform,
            "account": self.account_pk,
            "comment_id": self.comment_id,
            "post_id": self.post_id,
            "parent_id": self.parent_id,
            "author": {"id": self.author_id, "name": self.author_name},
            "text": self.text,
            "user": self.user_id,
            "conversation_id": self.conversation_id,
            "status": self.status,
            "reason": self.reason,
            "reply": {"text": self.reply_text, "id": self.reply_id},
            "attempts": self.attempts,
            "error": self.error,
            "decided_by": self.decided_by,
            "received_at": self.received_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _account(row: SocialAccount) -> AccountRecord:
    return AccountRecord(
        **{c.name: _aware(getattr(row, c.name)) for c in SocialAccount.__table__.columns}
    )


def _comment(row: SocialComment) -> CommentRecord:
    return CommentRecord(
        **{c.name: _aware(getattr(row, c.name)) for c in SocialComment.__table__.columns}
    )


class SocialStore:
    """Accounts, apps, comments and the delivery log."""

    def __init__(self, store: Store) -> None:
        self._tx = store._tx

    # -- apps -----------------------------------------------------------------------

    async def create_app(self, tenant_id: str, platform: str, name: str, secrets: str) -> str:
        async with self._tx(tenant_id) as s:
            row = SocialApp(
                id=new_id("sapp"),
                tenant_id=tenant_id,
                platform=platform,
                name=name,
                secrets=secrets,
            )
            s.add(row)
            return row.id

    async def list_apps(self, tenant_id: str) -> list[dict[str, Any]]:
        async with self._tx(tenant_id) as s:
            rows = (
                await s.execute(select(SocialApp).where(SocialApp.tenant_id == tenant_id))
            ).scalars()
            return [
                {
                    "id": r.id,
                    "platform": r.platform,
                    "name": r.name,
                    "created_at": _aware(r.created_at),
                }
                for r in rows
            ]

    async def app_secrets(self, app_id: str) -> tuple[str, str, str] | None:
        """``(tenant_id, platform, encrypted secrets)`` of an app, across tenants (webhooks)."""
        async with self._tx(system=True) as s:
            row = await s.get(SocialApp, app_id)
            return (row.tenant_id, row.platform, row.secrets) if row is not None else None

    async def delete_app(self, tenant_id: str, app_id: str) -> bool:
        async with self._tx(tenant_id) as s:
            result = await s.execute(
                delete(SocialApp).where(SocialApp.tenant_id == tenant_id, SocialApp.id == app_id)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    # -- accounts -------------------------------------------------------------------

    async def create_account(
        self,
        tenant_id: str,
        *,
        platform: str,
        account_id: str,
        persona_id: str,
        name: str,
        credentials: str,
        policy: dict[str, Any],
        app_id: str | None = None,
    ) -> AccountRecord | None:
        """A new connected account; None if that platform account is connected already."""
        row = SocialAccount(
            id=new_id("sacc"),
            tenant_id=tenant_id,
            platform=platform,
            account_id=account_id,
            persona_id=persona_id,
            app_id=app_id,
            name=name,
            credentials=credentials,
            policy=policy,
            enabled=True,
            cursor={},
            created_at=utcnow(),
        )
        try:
            async with self._tx(tenant_id) as s:
                s.add(row)
        except IntegrityError:
            return None
        return _account(row)

    async def get_account(self, tenant_id: str, account_pk: str) -> AccountRecord | None:
        async with self._tx(tenant_id) as s:
            row = await s.get(SocialAccount, account_pk)
            return _account(row) if row is not None and row.tenant_id == tenant_id else None

    async def route(self, platform: str, account_id: str) -> AccountRecord | None:
        """The connected account a comment is for (across tenants: it decides the tenant)."""
        async with self._tx(system=True) as s:
            row = (
                await s.execute(
                    select(SocialAccount).where(
                        SocialAccount.platform == platform, SocialAccount.account_id == account_id
                    )
                )
            ).scalar_one_or_none()
            return _account(row) if row is not None else None

    async def list_accounts(
        self, tenant_id: str | None, *, platform: str | None = None
    ) -> list[AccountRecord]:
        """A tenant's accounts; ``tenant_id=None``: every tenant's (the poller)."""
        q = select(SocialAccount).order_by(SocialAccount.created_at)
        if tenant_id is not None:
            q = q.where(SocialAccount.tenant_id == tenant_id)
        if platform is not None:
            q = q.where(SocialAccount.platform == platform)
        async with self._tx(tenant_id, system=tenant_id is None) as s:
            return [_account(r) for r in (await s.execute(q)).scalars()]

    async def update_account(
        self, tenant_id: str, account_pk: str, **values: Any
    ) -> AccountRecord | None:
        allowed = {
            "persona_id",
            "name",
            "credentials",
            "policy",
            "enabled",
            "cursor",
            "next_poll_at",
        }
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
        async with self._tx(tenant_id) as s:
            if values:
                await s.execute(
                    update(SocialAccount)
                    .where(SocialAccount.tenant_id == tenant_id, SocialAccount.id == account_pk)
                    .values(**values)
                )
            row = await s.get(SocialAccount, account_pk)
            return _account(row) if row is not None and row.tenant_id == tenant_id else None

    async def delete_account(self, tenant_id: str, account_pk: str) -> bool:
        async with self._tx(tenant_id) as s:
            result = await s.execute(
                delete(SocialAccount).where(
                    SocialAccount.tenant_id == tenant_id, SocialAccount.id == account_pk
                )
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    # -- comments ---------------------------------------------------------------------

    async def add_comment(
        self, tenant_id: str, account_pk: str, **values: Any
    ) -> CommentRecord | None:
        """Record a comment once; None when it was recorded before (a duplicate delivery)."""
        now = utcnow()
        row = SocialComment(
            id=new_id("scom"),
            tenant_id=tenant_id,
            account_pk=account_pk,
            status="received",
            attempts=0,
            received_at=now,
            updated_at=now,
            **values,
        )
        try:
            async with self._tx(tenant_id) as s:
                s.add(row)
        except IntegrityError:
            return None
        return _comment(row)

    async def get_comment(self, tenant_id: str, comment_pk: str) -> CommentRecord | None:
        async with self._tx(tenant_id) as s:
            row = await s.get(SocialComment, comment_pk)
            return _comment(row) if row is not None and row.tenant_id == tenant_id else None

    async def list_comments(
        self,
        tenant_id: str,
        *,
        status: Sequence[str] | None = None,
        account_pk: str | None = None,
        limit: int = 100,
    ) -> list[CommentRecord]:
        q = select(SocialComment).where(SocialComment.tenant_id == tenant_id)
        if status:
            q = q.where(SocialComment.status.in_(list(status)))
        if account_pk is not None:
            q = q.where(SocialComment.account_pk == account_pk)
        q = q.order_by(SocialComment.received_at.desc(), SocialComment.id.desc()).limit(limit)
        async with self._tx(tenant_id) as s:
            return [_comment(r) for r in (await s.execute(q)).scalars()]

    async def transition(
        self,
        tenant_id: str,
        comment_pk: str,
        from_states: Sequence[str],
        to_state: str,
        **values: Any,
    ) -> CommentRecord | None:
        """Move a comment between states atomically; None if it was not in ``from_states``.

        What keeps two replicas (or an operator and the retry sweeper) from
        acting on one comment twice.
        """
        if to_state not in COMMENT_STATES:
            raise ValueError(f"unknown comment state {to_state!r}")
        async with self._tx(tenant_id) as s:
            result = await s.execute(
                update(SocialComment)
                .where(
                    SocialComment.tenant_id == tenant_id,
                    SocialComment.id == comment_pk,
                    SocialComment.status.in_(list(from_states)),
                )
                .values(status=to_state, updated_at=utcnow(), **values)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return None
            row = await s.get(SocialComment, comment_pk)
            return _comment(row) if row is not None else None

    async def due(self, now: datetime, limit: int = 50) -> list[CommentRecord]:
        """Comments whose next attempt is due (every tenant: the sweeper)."""
        async with self._tx(system=True) as s:
            rows = (
                await s.execute(
                    select(SocialComment)
                    .where(
                        SocialComment.status.in_(("retrying", "approved")),
                        SocialComment.next_attempt_at <= now,
                    )
                    .order_by(SocialComment.next_attempt_at)
                    .limit(limit)
                )
            ).scalars()
            return [_comment(r) for r in rows]

    async def stale(
        self, states: Sequence[str], before: datetime, limit: int = 50
    ) -> list[CommentRecord]:
        """Comments in ``states`` untouched since ``before`` (every tenant: the sweeper)."""
        async with self._tx(system=True) as s:
            rows = (
                await s.execute(
                    select(SocialComment)
                    .where(
                        SocialComment.status.in_(list(states)), SocialComment.updated_at < before
                    )
                    .order_by(SocialComment.updated_at)
                    .limit(limit)
                )
            ).scalars()
            return [_comment(r) for r in rows]

    async def sent_in_window(self, tenant_id: str, account_pk: str, since: datetime) -> int:
        """Replies sent by an account since ``since`` (its hourly limit)."""
        from sqlalchemy import func

        async with self._tx(tenant_id) as s:
            return int(
                (
                    await s.execute(
                        select(func.count())
                        .select_from(SocialComment)
                        .where(
                            SocialComment.tenant_id == tenant_id,
                            SocialComment.account_pk == account_pk,
                            SocialComment.status.in_(("sent", "sending")),
                            SocialComment.updated_at >= since,
                        )
                    )
                ).scalar_one()
            )

    # -- deliveries -------------------------------------------------------------------

    async def log_delivery(
        self,
        platform: str,
        status: str,
        *,
        delivery_id: str | None = None,
        code: str | None = None,
        comments: int = 0,
        new_comments: int = 0,
        size: int = 0,
    ) -> None:
        async with self._tx(system=True) as s:
            s.add(
                SocialDelivery(
                    id=new_id("sdel"),
                    platform=platform,
                    delivery_id=delivery_id,
                    status=status,
                    code=code,
                    comments=comments,
                    new_comments=new_comments,
                    bytes=size,
                    received_at=utcnow(),
                )
            )

    async def seen_delivery(self, platform: str, delivery_id: str) -> bool:
        async with self._tx(system=True) as s:
            found = (
                await s.execute(
                    select(SocialDelivery.id)
                    .where(
                        SocialDelivery.platform == platform,
                        SocialDelivery.delivery_id == delivery_id,
                        SocialDelivery.status == "accepted",
                    )
                    .limit(1)
                )
            ).first()
            return found is not None

    async def deliveries(self, limit: int = 100) -> list[dict[str, Any]]:
        async with self._tx(system=True) as s:
            rows = (
                await s.execute(
                    select(SocialDelivery).order_by(SocialDelivery.received_at.desc()).limit(limit)
                )
            ).scalars()
            return [
                {
                    "platform": r.platform,
                    "delivery_id": r.delivery_id,
                    "status": r.status,
                    "code": r.code,
                    "comments": r.comments,
                    "new_comments": r.new_comments,
                    "bytes": r.bytes,
                    "received_at": _aware(r.received_at).isoformat(),
                }
                for r in rows
            ]

    async def trim_deliveries(self, older_than: timedelta) -> int:
        async with self._tx(system=True) as s:
            result = await s.execute(
                delete(SocialDelivery).where(SocialDelivery.received_at < utcnow() - older_than)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]
