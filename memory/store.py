"""The durable store: tenants, keys, personas, users, conversations, messages.

Every method that touches tenant-owned rows takes ``tenant_id`` and filters by
it; there is no way to read another tenant's row through this class. One
implementation serves SQLite and Postgres (SQLAlchemy 2 async).

On Postgres the database enforces the same rule a second time: each
transaction declares its tenant (``salon.tenant_id``) and row-level security
policies hide every other tenant's rows, so a query that forgets its
``WHERE tenant_id`` still cannot leak (docs/postgres.md). The few cross-tenant
operations (API-key lookup, tenant bootstrap and listing, server secrets) opt in
explicitly with ``salon.scope = 'system'``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from memory.direct import MESSAGE_COLUMNS, DirectMessages, DuplicateMessage, direct_messages
from memory.ids import new_id
from memory.models import (
    ApiKey,
    Conversation,
    Message,
    Persona,
    ServerSecret,
    Tenant,
    User,
    aware,
    utcnow,
)
from memory.records import (
    ApiKeyRecord,
    ConversationRecord,
    MessageRecord,
    PersonaRecord,
    TenantRecord,
    UserRecord,
)

# Postgres settings read by the row-level security policies of migration 0002.
_SET_SCOPE = text(
    "SELECT set_config('salon.tenant_id', :tenant, true), set_config('salon.scope', :scope, true)"
)


class Conflict(Exception):
    """A unique value (e.g. a persona slug) is already taken in this tenant."""


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_api_key() -> str:
    """A new API key: ``sk_salon_`` + 43 url-safe characters (256 bits)."""
    return "sk_salon_" + secrets.token_urlsafe(32)


class Store:
    """Tenant-scoped access to the durable store."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # Row-level security exists on Postgres only (migration 0002); SQLite
        # transactions carry no settings and cost no extra round trip.
        self._row_security = engine.dialect.name == "postgresql"
        # Per-message operations on the driver's fast path (memory/direct.py).
        self._direct = direct_messages(engine)

    @property
    def direct(self) -> DirectMessages | None:
        """The per-message fast path (memory/direct.py); None where the database has none."""
        return self._direct

    @asynccontextmanager
    async def _tx(
        self, tenant_id: str | None = None, *, system: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """One transaction, scoped for row-level security on Postgres.

        ``tenant_id`` makes that tenant's rows visible (and the only rows
        writable); ``system=True`` opts in to cross-tenant access, for the few
        operations that must find a tenant rather than act inside one. Both are
        transaction-local (``set_config(..., true)``), so nothing leaks to the
        next user of a pooled connection. With neither, tenant-owned tables
        read as empty on Postgres.
        """
        async with self._sessions() as session, session.begin():
            if self._row_security and (tenant_id is not None or system):
                await session.execute(
                    _SET_SCOPE, {"tenant": tenant_id or "", "scope": "system" if system else ""}
                )
            yield session

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        if self._direct is not None:
            await self._direct.close()
        await self.engine.dispose()

    # -- tenants, keys, secrets ---------------------------------------------

    async def count_tenants(self) -> int:
        async with self._tx(system=True) as s:
            return int((await s.execute(select(func.count()).select_from(Tenant))).scalar_one())

    async def create_tenant(self, name: str, *, tenant_id: str | None = None) -> TenantRecord:
        """Create a tenant; a taken ``tenant_id`` raises :class:`Conflict`."""
        try:
            async with self._tx(system=True) as s:
                row = Tenant(id=tenant_id or new_id("ten"), name=name)
                s.add(row)
        except IntegrityError as exc:
            raise Conflict(f"tenant {tenant_id!r} already exists") from exc
        return TenantRecord(id=row.id, name=row.name)

    async def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        async with self._tx(system=True) as s:
            row = await s.get(Tenant, tenant_id)
        return TenantRecord(id=row.id, name=row.name) if row else None

    async def list_tenants(self) -> list[TenantRecord]:
        async with self._tx(system=True) as s:
            rows = (await s.execute(select(Tenant).order_by(Tenant.created_at))).scalars()
            return [TenantRecord(id=r.id, name=r.name) for r in rows]

    async def create_api_key(
        self, tenant_id: str, name: str, *, role: str = "admin", key: str | None = None
    ) -> tuple[ApiKeyRecord, str]:
        """Create a key; return its record and the plaintext (shown once, never stored)."""
        plaintext = key or generate_api_key()
        async with self._tx(tenant_id) as s:
            row = ApiKey(
                id=new_id("key"),
                tenant_id=tenant_id,
                name=name,
                key_hash=hash_api_key(plaintext),
                prefix=plaintext[:12],
                role=role,
            )
            s.add(row)
        return _key_record(row), plaintext

    async def find_api_key(self, plaintext: str) -> ApiKeyRecord | None:
        """The live key whose hash matches, across tenants (this is how auth finds the tenant)."""
        async with self._tx(system=True) as s:
            row = (
                await s.execute(
                    select(ApiKey).where(
                        ApiKey.key_hash == hash_api_key(plaintext), ApiKey.revoked_at.is_(None)
                    )
                )
            ).scalar_one_or_none()
        return _key_record(row) if row else None

    async def get_or_create_secret(self, name: str) -> str:
        """A random secret shared by every replica through the database."""
        async with self._tx(system=True) as s:
            row = await s.get(ServerSecret, name)
            if row:
                return row.value
        try:
            async with self._tx(system=True) as s:
                s.add(ServerSecret(name=name, value=secrets.token_urlsafe(32)))
        except IntegrityError:
            pass  # another replica created it first; read theirs
        async with self._tx(system=True) as s:
            row = await s.get(ServerSecret, name)
            assert row is not None
            return row.value

    # -- personas -----------------------------------------------------------

    async def create_persona(
        self, tenant_id: str, *, slug: str, name: str, data: dict[str, Any]
    ) -> PersonaRecord:
        try:
            async with self._tx(tenant_id) as s:
                row = Persona(
                    id=new_id("per"), tenant_id=tenant_id, slug=slug, name=name, data=data
                )
                s.add(row)
        except IntegrityError as exc:
            # Only a taken slug is a conflict; anything else (an unknown tenant) stays an error.
            if await self.get_persona(tenant_id, slug) is not None:
                raise Conflict(f"a persona with slug {slug!r} already exists") from exc
            raise
        return _persona_record(row)

    async def get_persona(self, tenant_id: str, id_or_slug: str) -> PersonaRecord | None:
        async with self._tx(tenant_id) as s:
            row = (
                await s.execute(
                    select(Persona).where(
                        Persona.tenant_id == tenant_id,
                        (Persona.id == id_or_slug) | (Persona.slug == id_or_slug),
                    )
                )
            ).scalar_one_or_none()
        return _persona_record(row) if row else None

    async def list_personas(self, tenant_id: str) -> list[PersonaRecord]:
        async with self._tx(tenant_id) as s:
            rows = (
                await s.execute(
                    select(Persona)
                    .where(Persona.tenant_id == tenant_id)
                    .order_by(Persona.created_at)
                )
            ).scalars()
            return [_persona_record(r) for r in rows]

    async def update_persona(
        self, tenant_id: str, persona_id: str, *, slug: str, name: str, data: dict[str, Any]
    ) -> PersonaRecord | None:
        try:
            async with self._tx(tenant_id) as s:
                row = (
                    await s.execute(
                        select(Persona).where(
                            Persona.tenant_id == tenant_id, Persona.id == persona_id
                        )
                    )
                ).scalar_one_or_none()
                if row is None:
                    return None
                row.slug, row.name, row.data, row.updated_at = slug, name, data, utcnow()
        except IntegrityError as exc:
            raise Conflict(f"a persona with slug {slug!r} already exists") from exc
        return _persona_record(row)

    async def delete_persona(self, tenant_id: str, persona_id: str) -> bool:
        async with self._tx(tenant_id) as s:
            row = (
                await s.execute(
                    select(Persona).where(Persona.tenant_id == tenant_id, Persona.id == persona_id)
                )
            ).scalar_one_or_none()
            if row is None:
                return False
            await s.delete(row)
        return True

    # -- users --------------------------------------------------------------

    async def get_or_create_user(
        self, tenant_id: str, external_id: str, name: str | None = None
    ) -> UserRecord:
        """The user with this external id, created on first sight (race-safe)."""
        for _ in range(2):
            async with self._tx(tenant_id) as s:
                row = (
                    await s.execute(
                        select(User).where(
                            User.tenant_id == tenant_id, User.external_id == external_id
                        )
                    )
                ).scalar_one_or_none()
                if row is not None:
                    if name and row.name != name:
                        row.name = name
                    return _user_record(row)
            try:
                async with self._tx(tenant_id) as s:
                    row = User(
                        id=new_id("usr"), tenant_id=tenant_id, external_id=external_id, name=name
                    )
                    s.add(row)
                return _user_record(row)
            except IntegrityError:
                continue  # created concurrently; the next pass reads it
        raise RuntimeError("could not create user")  # pragma: no cover

    async def get_user(self, tenant_id: str, user_id: str) -> UserRecord | None:
        async with self._tx(tenant_id) as s:
            row = (
                await s.execute(select(User).where(User.tenant_id == tenant_id, User.id == user_id))
            ).scalar_one_or_none()
        return _user_record(row) if row else None

    async def find_user(self, tenant_id: str, external_id: str) -> UserRecord | None:
        """The user with this external id (the tenant's own id for the person), if any."""
        async with self._tx(tenant_id) as s:
            row = (
                await s.execute(
                    select(User).where(User.tenant_id == tenant_id, User.external_id == external_id)
                )
            ).scalar_one_or_none()
        return _user_record(row) if row else None

    async def delete_user(self, tenant_id: str, user_id: str) -> dict[str, int]:
        """Forget a person: the user row and, by cascade, their conversations,
        messages and everything else that references them. Returns counts."""
        async with self._tx(tenant_id) as s:
            conv_ids = select(Conversation.id).where(
                Conversation.tenant_id == tenant_id, Conversation.user_id == user_id
            )
            messages = (
                await s.execute(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.tenant_id == tenant_id, Message.conversation_id.in_(conv_ids))
                )
            ).scalar_one()
            conversations = (
                await s.execute(select(func.count()).select_from(conv_ids.subquery()))
            ).scalar_one()
            # Explicit deletes (children first) rather than trusting every
            # backend's cascade settings: forgetting must be complete.
            await s.execute(
                delete(Message).where(
                    Message.tenant_id == tenant_id, Message.conversation_id.in_(conv_ids)
                )
            )
            await s.execute(
                delete(Conversation).where(
                    Conversation.tenant_id == tenant_id, Conversation.user_id == user_id
                )
            )
            users = (
                await s.execute(
                    select(func.count())
                    .select_from(User)
                    .where(User.tenant_id == tenant_id, User.id == user_id)
                )
            ).scalar_one()
            await s.execute(delete(User).where(User.tenant_id == tenant_id, User.id == user_id))
        return {
            "users": int(users or 0),
            "conversations": int(conversations),
            "messages": int(messages),
        }

    async def list_conversations(self, tenant_id: str, *, user_id: str) -> list[ConversationRecord]:
        async with self._tx(tenant_id) as s:
            rows = (
                await s.execute(
                    select(Conversation)
                    .where(Conversation.tenant_id == tenant_id, Conversation.user_id == user_id)
                    .order_by(Conversation.created_at, Conversation.id)
                )
            ).scalars()
            return [_conversation_record(r) for r in rows]

    # -- conversations ------------------------------------------------------

    async def create_conversation(
        self, tenant_id: str, *, persona_id: str, user_id: str, channel: str = "ws"
    ) -> ConversationRecord:
        async with self._tx(tenant_id) as s:
            row = Conversation(
                id=new_id("conv"),
                tenant_id=tenant_id,
                persona_id=persona_id,
                user_id=user_id,
                channel=channel,
                last_seq=0,
            )
            s.add(row)
        return _conversation_record(row)

    async def get_conversation(
        self, tenant_id: str, conversation_id: str
    ) -> ConversationRecord | None:
        async with self._tx(tenant_id) as s:
            row = (
                await s.execute(
                    select(Conversation).where(
                        Conversation.tenant_id == tenant_id, Conversation.id == conversation_id
                    )
                )
            ).scalar_one_or_none()
        return _conversation_record(row) if row else None

    async def latest_conversation(
        self, tenant_id: str, *, persona_id: str, user_id: str, channel: str
    ) -> ConversationRecord | None:
        async with self._tx(tenant_id) as s:
            row = (
                await s.execute(
                    select(Conversation)
                    .where(
                        Conversation.tenant_id == tenant_id,
                        Conversation.persona_id == persona_id,
                        Conversation.user_id == user_id,
                        Conversation.channel == channel,
                    )
                    .order_by(Conversation.created_at.desc(), Conversation.id.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
        return _conversation_record(row) if row else None

    async def record_last_seq(self, tenant_id: str, conversation_id: str, seq: int) -> None:
        """Remember the highest issued seq (only ever raises it)."""
        if self._direct is not None:
            await self._direct.raise_last_seq(tenant_id, conversation_id, seq)
            return
        async with self._tx(tenant_id) as s:
            await s.execute(
                update(Conversation)
                .where(
                    Conversation.tenant_id == tenant_id,
                    Conversation.id == conversation_id,
                    Conversation.last_seq < seq,
                )
                .values(last_seq=seq, updated_at=utcnow())
            )

    # -- messages -----------------------------------------------------------

    async def add_message(
        self,
        tenant_id: str,
        conversation_id: str,
        *,
        role: str,
        content: str,
        client_id: str | None = None,
        status: str = "complete",
        response_id: str | None = None,
        message_id: str | None = None,
    ) -> tuple[MessageRecord, bool]:
        """Insert a message; with ``client_id``, a repeat returns the first one and ``False``."""
        record = MessageRecord(
            id=message_id or new_id("msg"),
            tenant_id=tenant_id,
            conversation_id=conversation_id,
            role=role,
            content=content,
            status=status,
            client_id=client_id,
            response_id=response_id,
            created_at=utcnow(),
        )
        values = {name: getattr(record, name) for name in MESSAGE_COLUMNS}
        try:
            if self._direct is not None:
                await self._direct.insert_message(values)
            else:
                async with self._tx(tenant_id) as s:
                    s.add(Message(**values))
            return record, True
        except (DuplicateMessage, IntegrityError):
            if client_id is None:
                raise
        existing = await self.find_client_message(tenant_id, conversation_id, client_id)
        if existing is None:  # pragma: no cover - the conflicting row vanished
            raise RuntimeError("message conflict without a stored message")
        return existing, False

    async def find_client_message(
        self, tenant_id: str, conversation_id: str, client_id: str
    ) -> MessageRecord | None:
        async with self._tx(tenant_id) as s:
            row = (
                await s.execute(
                    select(Message).where(
                        Message.tenant_id == tenant_id,
                        Message.conversation_id == conversation_id,
                        Message.client_id == client_id,
                    )
                )
            ).scalar_one_or_none()
        return _message_record(row) if row else None

    async def list_messages(
        self,
        tenant_id: str,
        conversation_id: str,
        *,
        limit: int = 100,
        before: str | None = None,
    ) -> list[MessageRecord]:
        """The newest ``limit`` messages (older than message ``before``), oldest first."""
        if self._direct is not None and before is None:
            return await self._direct.recent_messages(tenant_id, conversation_id, limit)
        async with self._tx(tenant_id) as s:
            q = select(Message).where(
                Message.tenant_id == tenant_id, Message.conversation_id == conversation_id
            )
            if before:
                pivot = (
                    await s.execute(
                        select(Message.created_at, Message.id).where(
                            Message.tenant_id == tenant_id, Message.id == before
                        )
                    )
                ).one_or_none()
                if pivot is not None:
                    q = q.where(
                        (Message.created_at < pivot[0])
                        | ((Message.created_at == pivot[0]) & (Message.id < pivot[1]))
                    )
            q = q.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit)
            rows = list((await s.execute(q)).scalars())
        rows.reverse()
        return [_message_record(r) for r in rows]

    async def message_pages(
        self, tenant_id: str, conversation_id: str, *, page: int = 500
    ) -> AsyncIterator[list[MessageRecord]]:
        """Every message of a conversation, oldest first, ``page`` at a time.

        Keyset paging on (``created_at``, id): one short transaction per page,
        so exporting a long history holds neither a transaction nor all of it
        in memory. A message stored meanwhile may or may not be included.
        """
        after: tuple[datetime, str] | None = None
        while True:
            async with self._tx(tenant_id) as s:
                q = select(Message).where(
                    Message.tenant_id == tenant_id, Message.conversation_id == conversation_id
                )
                if after is not None:
                    q = q.where(
                        (Message.created_at > after[0])
                        | ((Message.created_at == after[0]) & (Message.id > after[1]))
                    )
                q = q.order_by(Message.created_at, Message.id).limit(page)
                rows = list((await s.execute(q)).scalars())
            if rows:
                yield [_message_record(r) for r in rows]
                after = (rows[-1].created_at, rows[-1].id)
            if len(rows) < page:
                return


def _key_record(row: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id, tenant_id=row.tenant_id, name=row.name, role=row.role, prefix=row.prefix
    )


def _persona_record(row: Persona) -> PersonaRecord:
    return PersonaRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        slug=row.slug,
        name=row.name,
        data=dict(row.data),
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
    )


def _user_record(row: User) -> UserRecord:
    return UserRecord(
        id=row.id, tenant_id=row.tenant_id, external_id=row.external_id, name=row.name
    )


def _conversation_record(row: Conversation) -> ConversationRecord:
    return ConversationRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        persona_id=row.persona_id,
        user_id=row.user_id,
        channel=row.channel,
        last_seq=row.last_seq,
        created_at=aware(row.created_at),
    )


def _message_record(row: Message) -> MessageRecord:
    return MessageRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        conversation_id=row.conversation_id,
        role=row.role,
        content=row.content,
        status=row.status,
        client_id=row.client_id,
        response_id=row.response_id,
        created_at=aware(row.created_at),
    )
