"""Cloned voices, their consent records and their audit trail (docs/voice-cloning.md).

Three tenant-owned tables, created by migration 0008:

- ``voices``: one cloned voice: the provider and its voice id, the status
  (``pending`` while the provider works, then ``active``, ``failed`` or
  ``revoked``), the media keys of the stored reference audio, and who
  created and revoked it;
- ``voice_consents``: exactly one per voice (its primary key is the voice
  id): who consented (the speaker), the statement they agreed to, its scope,
  when it was obtained, which API principal recorded it, and an optional
  recording of the consent (its media key and SHA-256, the hash kept after
  the recording is deleted);
- ``voice_audit``: append-only rows (``consent_recorded``, ``created``,
  ``create_failed``, ``revoked``, ``deleted_at_provider``, ``delete_failed``,
  ``audio_deleted``). The store has no method that changes or deletes one,
  and migration 0008 adds a trigger that refuses any ``UPDATE`` on both
  SQLite and Postgres; rows go only with their tenant (``ON DELETE
  CASCADE``).

Uses of a voice are not audited row by row: every spoken reply and every
``/v1/audio/speech`` call resolves its voice, and a row per use would make
the audit table the busiest in the database (and a write on the speaking
path). Revocation, not a usage log, is what stops a voice.

:class:`VoiceStore` opens its transactions through :class:`memory.store.Store`
(``store._tx``), so on Postgres each one declares its tenant for row-level
security, as :class:`memory.feeds_store.FeedStore` does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, String, Text, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from memory.ids import new_id
from memory.models import Base, utcnow
from memory.store import Store

NAME_MAX = ACTOR_MAX = 200
KEY_MAX = 512

PENDING, ACTIVE, FAILED, REVOKED = "pending", "active", "failed", "revoked"
STATUSES = (PENDING, ACTIVE, FAILED, REVOKED)

AUDIT_ACTIONS = (
    "consent_recorded",
    "created",
    "create_failed",
    "revoked",
    "deleted_at_provider",
    "delete_failed",
    "audio_deleted",
)


class Voice(Base):
    """A cloned voice of one tenant."""

    __tablename__ = "voices"
    __table_args__ = (Index("ix_voices_tenant_created", "tenant_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    provider: Mapped[str] = mapped_column(String(40))
    # Null until the provider made the voice (and for a voice it failed to make).
    provider_voice_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    requires_verification: Mapped[bool] = mapped_column(Boolean, default=False)
    # Media keys of the stored reference samples (WAV); [] once deleted.
    audio_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The recording a local engine (XTTS) reads at synthesis time, when there is one.
    reference_key: Mapped[str | None] = mapped_column(String(KEY_MAX), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(ACTOR_MAX))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(ACTOR_MAX), nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # When the clone was deleted at the provider / the stored audio removed;
    # null after a revocation means that cleanup is still owed (a retry does it).
    provider_deleted_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    audio_deleted_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )


class VoiceConsent(Base):
    """The speaker's consent to the clone: one per voice, never changed."""

    __tablename__ = "voice_consents"
    voice_id: Mapped[str] = mapped_column(
        ForeignKey("voices.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    speaker_name: Mapped[str] = mapped_column(String(NAME_MAX))
    statement: Mapped[str] = mapped_column(Text)
    scope: Mapped[list[str]] = mapped_column(JSON, default=list)
    obtained_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(String(ACTOR_MAX))
    evidence_key: Mapped[str | None] = mapped_column(String(KEY_MAX), nullable=True)
    evidence_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class VoiceAudit(Base):
    """One thing that happened to a voice; rows are only ever added."""

    __tablename__ = "voice_audit"
    __table_args__ = (Index("ix_voice_audit_voice", "tenant_id", "voice_id", "at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    voice_id: Mapped[str] = mapped_column(ForeignKey("voices.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(ACTOR_MAX))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# -- records ---------------------------------------------------------------------


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything here is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _iso(value: datetime | None) -> str | None:
    value = _aware(value)
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class NewConsent:
    """A consent statement as the API received and checked it, before it is stored."""

    speaker_name: str
    statement: str
    scope: list[str]
    obtained_at: datetime
    evidence_key: str | None = None
    evidence_sha256: str | None = None


@dataclass(frozen=True)
class ConsentRecord:
    voice_id: str
    speaker_name: str
    statement: str
    scope: list[str]
    obtained_at: datetime
    recorded_by: str
    evidence_key: str | None
    evidence_sha256: str | None
    created_at: datetime

    def to_public(self) -> dict[str, Any]:
        return {
            "speaker_name": self.speaker_name,
            "statement": self.statement,
            "scope": list(self.scope),
            "obtained_at": _iso(self.obtained_at),
            "recorded_by": self.recorded_by,
            "recorded_at": _iso(self.created_at),
            # The hash stays when the recording is deleted: whoever holds the
            # original can still show it is the one given.
            "evidence": (
                {"sha256": self.evidence_sha256, "stored": self.evidence_key is not None}
                if self.evidence_sha256
                else None
            ),
        }


@dataclass(frozen=True)
class VoiceRecord:
    id: str
    tenant_id: str
    name: str
    description: str | None
    provider: str
    provider_voice_id: str | None
    status: str
    requires_verification: bool
    audio_keys: list[str]
    reference_key: str | None
    error_code: str | None
    error: str | None
    created_by: str
    created_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None
    provider_deleted_at: datetime | None
    audio_deleted_at: datetime | None

    @property
    def cleanup_owed(self) -> bool:
        """Revoked, but the provider's copy or the stored audio is not confirmed gone yet."""
        if self.status != REVOKED:
            return False
        provider_owed = self.provider_voice_id is not None and self.provider_deleted_at is None
        return provider_owed or self.audio_deleted_at is None

    def to_public(self, consent: ConsentRecord | None = None) -> dict[str, Any]:
        """The API's view: never the audio, its media keys or the provider's voice id."""
        body: dict[str, Any] = {
            "id": self.id,
            "object": "voice",
            "name": self.name,
            "description": self.description,
            "provider": self.provider,
            "status": self.status,
            "requires_verification": self.requires_verification,
            "samples": len(self.audio_keys),
            "created_by": self.created_by,
            "created_at": _iso(self.created_at),
            "error": (
                {"code": self.error_code, "message": self.error} if self.error_code else None
            ),
            "revocation": None,
        }
        if self.status == REVOKED:
            body["revocation"] = {
                "revoked_at": _iso(self.revoked_at),
                "revoked_by": self.revoked_by,
                "reason": self.revoke_reason,
                "provider_deleted": self.provider_voice_id is None
                or self.provider_deleted_at is not None,
                "audio_deleted": self.audio_deleted_at is not None,
            }
        if consent is not None:
            body["consent"] = consent.to_public()
        return body


@dataclass(frozen=True)
class AuditRecord:
    id: str
    voice_id: str
    action: str
    actor: str
    at: datetime
    details: dict[str, Any]

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "voice.audit",
            "voice_id": self.voice_id,
            "action": self.action,
            "actor": self.actor,
            "at": _iso(self.at),
            "details": dict(self.details),
        }


def _voice(row: Voice) -> VoiceRecord:
    values = {f.name: getattr(row, f.name) for f in fields(VoiceRecord)}
    for name in ("created_at", "revoked_at", "provider_deleted_at", "audio_deleted_at"):
        values[name] = _aware(values[name])
    values["audio_keys"] = list(row.audio_keys or [])
    values["requires_verification"] = bool(row.requires_verification)
    return VoiceRecord(**values)


def _consent(row: VoiceConsent) -> ConsentRecord:
    return ConsentRecord(
        voice_id=row.voice_id,
        speaker_name=row.speaker_name,
        statement=row.statement,
        scope=list(row.scope or []),
        obtained_at=_aware(row.obtained_at) or utcnow(),
        recorded_by=row.recorded_by,
        evidence_key=row.evidence_key,
        evidence_sha256=row.evidence_sha256,
        created_at=_aware(row.created_at) or utcnow(),
    )


def _audit(row: VoiceAudit) -> AuditRecord:
    return AuditRecord(
        id=row.id,
        voice_id=row.voice_id,
        action=row.action,
        actor=row.actor,
        at=_aware(row.at) or utcnow(),
        details=dict(row.details or {}),
    )


# -- the store -------------------------------------------------------------------


class VoiceStore:
    """Tenant-scoped access to ``voices``, ``voice_consents`` and ``voice_audit``.

    Every method takes the tenant and filters on it (row-level security on
    Postgres is the second fence, not the first); another tenant's voice is
    simply not found. Each state change writes its audit row in the same
    transaction, so the trail cannot miss a change that happened.
    """

    def __init__(self, store: Store) -> None:
        self._tx = store._tx

    @staticmethod
    def _add_audit(
        s: AsyncSession,
        tenant_id: str,
        voice_id: str,
        action: str,
        actor: str,
        details: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> VoiceAudit:
        if action not in AUDIT_ACTIONS:
            raise ValueError(f"unknown voice audit action {action!r}")
        row = VoiceAudit(
            id=new_id("vaud"),
            tenant_id=tenant_id,
            voice_id=voice_id,
            action=action,
            actor=actor[:ACTOR_MAX],
            at=at or utcnow(),
            details=dict(details or {}),
        )
        s.add(row)
        return row

    @staticmethod
    async def _row(s: AsyncSession, tenant_id: str, voice_id: str) -> Voice | None:
        query = select(Voice).where(Voice.tenant_id == tenant_id, Voice.id == voice_id)
        return (await s.execute(query)).scalar_one_or_none()

    async def create_voice(
        self,
        tenant_id: str,
        *,
        voice_id: str,
        name: str,
        provider: str,
        consent: NewConsent,
        actor: str,
        audio_keys: list[str],
        description: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> tuple[VoiceRecord, ConsentRecord]:
        """Record a ``pending`` voice, its consent and the ``consent_recorded`` audit row.

        All three in one transaction: no voice exists without its consent.
        """
        now = utcnow()
        async with self._tx(tenant_id) as s:
            voice = Voice(
                id=voice_id,
                tenant_id=tenant_id,
                name=name[:NAME_MAX],
                description=description,
                provider=provider,
                provider_voice_id=None,
                status=PENDING,
                requires_verification=False,
                audio_keys=list(audio_keys),
                reference_key=None,
                created_by=actor[:ACTOR_MAX],
                created_at=now,
            )
            s.add(voice)
            await s.flush()  # the voice before the rows that refer to it
            row = VoiceConsent(
                voice_id=voice_id,
                tenant_id=tenant_id,
                speaker_name=consent.speaker_name[:NAME_MAX],
                statement=consent.statement,
                scope=list(consent.scope),
                obtained_at=consent.obtained_at,
                recorded_by=actor[:ACTOR_MAX],
                evidence_key=consent.evidence_key,
                evidence_sha256=consent.evidence_sha256,
                created_at=now,
            )
            s.add(row)
            audit = {
                "speaker_name": consent.speaker_name,
                "scope": list(consent.scope),
                "obtained_at": _iso(consent.obtained_at),
                "evidence_sha256": consent.evidence_sha256,
                **(details or {}),
            }
            self._add_audit(s, tenant_id, voice_id, "consent_recorded", actor, audit, now)
        return _voice(voice), _consent(row)

    async def activate(
        self,
        tenant_id: str,
        voice_id: str,
        *,
        provider_voice_id: str,
        requires_verification: bool,
        actor: str,
        reference_key: str | None = None,
        audio_keys: list[str] | None = None,
    ) -> VoiceRecord | None:
        """The provider made the voice: ``pending`` -> ``active``, audited ``created``.

        None when the voice is no longer pending (revoked meanwhile): the
        caller must then delete what the provider just made.
        """
        values: dict[str, Any] = {
            "status": ACTIVE,
            "provider_voice_id": provider_voice_id,
            "requires_verification": requires_verification,
            "reference_key": reference_key,
        }
        if audio_keys is not None:
            values["audio_keys"] = list(audio_keys)
        async with self._tx(tenant_id) as s:
            result = await s.execute(
                update(Voice)
                .where(Voice.tenant_id == tenant_id, Voice.id == voice_id, Voice.status == PENDING)
                .values(**values)
            )
            if not getattr(result, "rowcount", 0):
                return None
            details = {"requires_verification": requires_verification}
            self._add_audit(s, tenant_id, voice_id, "created", actor, details)
            row = await self._row(s, tenant_id, voice_id)
        return _voice(row) if row else None

    async def mark_failed(
        self,
        tenant_id: str,
        voice_id: str,
        *,
        code: str,
        message: str,
        actor: str,
        audio_deleted: bool,
    ) -> VoiceRecord | None:
        """The provider refused or failed: ``pending`` -> ``failed``, audited ``create_failed``."""
        now = utcnow()
        values: dict[str, Any] = {"status": FAILED, "error_code": code, "error": message[:2000]}
        if audio_deleted:
            values.update(audio_keys=[], audio_deleted_at=now)
        async with self._tx(tenant_id) as s:
            await s.execute(
                update(Voice)
                .where(Voice.tenant_id == tenant_id, Voice.id == voice_id, Voice.status == PENDING)
                .values(**values)
            )
            details = {"code": code, "message": message[:500], "audio_deleted": audio_deleted}
            self._add_audit(s, tenant_id, voice_id, "create_failed", actor, details, now)
            row = await self._row(s, tenant_id, voice_id)
        return _voice(row) if row else None

    async def revoke(
        self, tenant_id: str, voice_id: str, *, actor: str, reason: str | None
    ) -> tuple[VoiceRecord, bool] | None:
        """Mark the voice ``revoked`` (audited); ``(voice, True)`` for the call that did it.

        A conditional update, so of two concurrent revocations exactly one
        gets True; a voice revoked already comes back with False. None: no
        such voice in this tenant.
        """
        now = utcnow()
        async with self._tx(tenant_id) as s:
            result = await s.execute(
                update(Voice)
                .where(Voice.tenant_id == tenant_id, Voice.id == voice_id, Voice.status != REVOKED)
                .values(
                    status=REVOKED,
                    revoked_at=now,
                    revoked_by=actor[:ACTOR_MAX],
                    revoke_reason=reason,
                )
            )
            changed = bool(getattr(result, "rowcount", 0))
            if changed:
                self._add_audit(s, tenant_id, voice_id, "revoked", actor, {"reason": reason}, now)
            row = await self._row(s, tenant_id, voice_id)
        return (_voice(row), changed) if row else None

    async def record_provider_delete(
        self,
        tenant_id: str,
        voice_id: str,
        *,
        ok: bool,
        actor: str,
        details: dict[str, Any] | None = None,
    ) -> VoiceRecord | None:
        """Audit a deletion at the provider (``deleted_at_provider`` / ``delete_failed``)."""
        now = utcnow()
        async with self._tx(tenant_id) as s:
            if ok:
                await s.execute(
                    update(Voice)
                    .where(Voice.tenant_id == tenant_id, Voice.id == voice_id)
                    .values(provider_deleted_at=now)
                )
            action = "deleted_at_provider" if ok else "delete_failed"
            self._add_audit(s, tenant_id, voice_id, action, actor, details, now)
            row = await self._row(s, tenant_id, voice_id)
        return _voice(row) if row else None

    async def record_audio_deleted(
        self,
        tenant_id: str,
        voice_id: str,
        *,
        actor: str,
        deleted: list[str],
        evidence_deleted: bool = False,
    ) -> VoiceRecord | None:
        """The stored reference audio (and consent recording) is gone: clear keys, audit."""
        now = utcnow()
        async with self._tx(tenant_id) as s:
            await s.execute(
                update(Voice)
                .where(Voice.tenant_id == tenant_id, Voice.id == voice_id)
                .values(audio_keys=[], reference_key=None, audio_deleted_at=now)
            )
            if evidence_deleted:
                await s.execute(
                    update(VoiceConsent)
                    .where(VoiceConsent.tenant_id == tenant_id, VoiceConsent.voice_id == voice_id)
                    .values(evidence_key=None)
                )
            details = {"files": len(deleted), "consent_recording": evidence_deleted}
            self._add_audit(s, tenant_id, voice_id, "audio_deleted", actor, details, now)
            row = await self._row(s, tenant_id, voice_id)
        return _voice(row) if row else None

    async def get_voice(self, tenant_id: str, voice_id: str) -> VoiceRecord | None:
        async with self._tx(tenant_id) as s:
            row = await self._row(s, tenant_id, voice_id)
        return _voice(row) if row else None

    async def get_consent(self, tenant_id: str, voice_id: str) -> ConsentRecord | None:
        async with self._tx(tenant_id) as s:
            row = (
                await s.execute(
                    select(VoiceConsent).where(
                        VoiceConsent.tenant_id == tenant_id, VoiceConsent.voice_id == voice_id
                    )
                )
            ).scalar_one_or_none()
        return _consent(row) if row else None

    async def list_voices(
        self, tenant_id: str, *, status: str | None = None, limit: int = 100
    ) -> list[VoiceRecord]:
        """The tenant's voices, newest first."""
        query = select(Voice).where(Voice.tenant_id == tenant_id)
        if status is not None:
            query = query.where(Voice.status == status)
        query = query.order_by(Voice.created_at.desc(), Voice.id.desc()).limit(limit)
        async with self._tx(tenant_id) as s:
            return [_voice(r) for r in (await s.execute(query)).scalars()]

    async def list_audit(
        self, tenant_id: str, voice_id: str, *, limit: int = 500
    ) -> list[AuditRecord]:
        """The voice's audit trail, oldest first (the order things happened)."""
        query = (
            select(VoiceAudit)
            .where(VoiceAudit.tenant_id == tenant_id, VoiceAudit.voice_id == voice_id)
            .order_by(VoiceAudit.at, VoiceAudit.id)
            .limit(limit)
        )
        async with self._tx(tenant_id) as s:
            return [_audit(r) for r in (await s.execute(query)).scalars()]
