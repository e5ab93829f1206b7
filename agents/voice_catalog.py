"""Cloned voices: the consent-first workflow and the resolver TTS callers use.

:class:`VoiceCatalog` is the one place that creates, revokes and resolves a
tenant's cloned voices, so the HTTP routes (server/voices_api.py) and the
speaking paths (replies, ``/v1/audio/speech``) share it:

- :meth:`VoiceCatalog.create`: check the consent statement and the reference
  audio, store the samples (WAV) and the consent recording, record the voice
  (``pending``) with its consent and an audit row in one transaction, then ask
  the configured :class:`~media.tts.cloning.VoiceCloner` for the clone
  (``active``; on a provider failure ``failed``, the samples deleted, the
  consent record kept);
- :meth:`VoiceCatalog.revoke`: mark the voice ``revoked`` first (it is never
  spoken again, whatever happens next), then delete it at the provider and
  delete its stored audio; a step that fails is audited and retried by the
  next revocation call;
- :meth:`VoiceCatalog.resolve`: turn ``VoiceSettings(voice="voice_...")``
  into what the TTS provider needs (the ElevenLabs voice id, or the XTTS
  reference recording's path), refusing revoked, unfinished, unknown and
  other tenants' voices with :class:`VoiceUnavailable`.

docs/voice-cloning.md describes the workflow and the audit actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import structlog

from media.audio import AudioChunk, AudioFormatError, decode, wav_bytes
from media.storage import LocalMediaStorage, MediaStorage
from media.tts.base import TTSError, VoiceSettings
from media.tts.cloning import (
    ClonedVoice,
    CloningError,
    ReferenceAudioError,
    VoiceCloner,
    build_cloner,
    cloning_provider,
    prepare_samples,
    unavailable_message,
)
from media.voice_config import VoiceConfig
from memory.ids import new_id
from memory.store import Store
from memory.voices_store import (
    ACTIVE,
    PENDING,
    REVOKED,
    ConsentRecord,
    NewConsent,
    VoiceRecord,
    VoiceStore,
)

log = structlog.get_logger(__name__)

STATEMENT_MAX = 10_000
SCOPE_MAX = 50
VOICE_ID = re.compile(r"^voice_[0-9a-f]{28}$")
AUDIO_MIME = re.compile(r"^audio/[A-Za-z0-9][A-Za-z0-9.+-]{0,60}$")
ClonerFactory = Callable[[str], VoiceCloner]


class CloneRequestError(Exception):
    """The request cannot be cloned as sent; ``code`` is stable (docs/voice-cloning.md).

    Codes: ``consent_required`` (missing or incomplete consent),
    ``invalid_audio``, ``audio_too_short``, ``audio_too_long``,
    ``audio_silent``, ``too_many_samples``, ``invalid_request``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class VoiceUnavailable(TTSError):
    """A cloned voice that cannot be spoken; a :class:`TTSError`, so speaking paths handle it.

    Codes: ``voice_not_found`` (no such voice in this tenant, or its audio is
    gone), ``voice_revoked``, ``voice_not_ready`` (still being cloned, or the
    clone failed), ``voice_provider_mismatch`` (cloned for another provider
    than the one speaking).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True)
class CloneOutcome:
    """What :meth:`VoiceCatalog.create` did: the voice as stored, and the provider's error if any."""

    voice: VoiceRecord
    consent: ConsentRecord
    error: CloningError | None = None


@dataclass(frozen=True)
class RevokeOutcome:
    """What :meth:`VoiceCatalog.revoke` did; ``changed`` is False for a voice revoked before."""

    voice: VoiceRecord
    changed: bool
    provider_error: CloningError | None = None
    audio_error: str | None = None


def is_cloned_voice_id(voice: str | None) -> bool:
    """Is ``voice`` a Salon cloned voice id (``voice_`` + 28 hex digits)?"""
    return isinstance(voice, str) and bool(VOICE_ID.match(voice))


def _text(raw: Mapping[str, Any], field: str, limit: int) -> str:
    value = raw.get(field)
    if not isinstance(value, str) or not value.strip():
        raise CloneRequestError("consent_required", f"consent.{field} is required")
    if len(value) > limit:
        raise CloneRequestError("consent_required", f"consent.{field} is over {limit} characters")
    return value.strip()


def parse_consent(raw: Any, *, now: datetime | None = None) -> NewConsent:
    """Check a consent statement: ``speaker_name``, ``statement``, ``scope``, ``obtained_at``.

    ``scope`` is a non-empty list of strings (or one string): the uses and
    personas the speaker agreed to. ``obtained_at`` is an ISO date or date-time
    (a date means midnight UTC), not in the future. Anything missing or
    malformed is ``consent_required``: no clone is made without all four.
    """
    if not isinstance(raw, Mapping):
        raise CloneRequestError(
            "consent_required",
            "a consent record is required: {speaker_name, statement, scope, obtained_at}",
        )
    speaker = _text(raw, "speaker_name", 200)
    statement = _text(raw, "statement", STATEMENT_MAX)
    scope_raw = raw.get("scope")
    if isinstance(scope_raw, str):
        scope_raw = [scope_raw]
    if (
        not isinstance(scope_raw, list)
        or not scope_raw
        or len(scope_raw) > SCOPE_MAX
        or not all(isinstance(s, str) and s.strip() and len(s) <= 200 for s in scope_raw)
    ):
        raise CloneRequestError(
            "consent_required",
            f"consent.scope must be a non-empty list of at most {SCOPE_MAX} short strings",
        )
    scope = [s.strip() for s in scope_raw]
    obtained = raw.get("obtained_at")
    if not isinstance(obtained, str) or not obtained.strip():
        raise CloneRequestError("consent_required", "consent.obtained_at is required")
    obtained_at = _parse_when(obtained.strip())
    # A few minutes of slack: "just now" from a client whose clock runs ahead.
    if obtained_at > (now or datetime.now(UTC)) + timedelta(minutes=5):
        raise CloneRequestError("consent_required", "consent.obtained_at is in the future")
    return NewConsent(
        speaker_name=speaker, statement=statement, scope=scope, obtained_at=obtained_at
    )


def _parse_when(value: str) -> datetime:
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CloneRequestError(
            "consent_required", "consent.obtained_at must be an ISO 8601 date or date-time"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class VoiceCatalog:
    """A tenant's cloned voices: create with consent, revoke, resolve for speaking.

    ``store`` is the app's :class:`~memory.store.Store`; ``storage`` where the
    reference audio goes (``voices/<tenant>/<voice id>/...``); ``config`` the
    voice settings (``SALON_VOICE_CLONING_PROVIDER`` and the providers'
    keys). ``cloner_factory(provider_name)`` builds a cloner; the default
    builds it from ``config`` (one per operation: cloning is rare, and a
    revocation must reach the provider that made the voice even after the
    configuration moved on). ``cache_dir`` is where XTTS references are copied
    when ``storage`` has no local files.
    """

    def __init__(
        self,
        store: Store,
        storage: MediaStorage,
        config: VoiceConfig | None = None,
        *,
        cloner_factory: ClonerFactory | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.voices = VoiceStore(store)
        self.storage = storage
        self.config = config or VoiceConfig()
        self._factory = cloner_factory or (lambda name: build_cloner(name, self.config))
        self._cache_dir = cache_dir

    @property
    def provider(self) -> str | None:
        """The provider new voices are cloned with; None when cloning is off.

        An unknown ``SALON_VOICE_CLONING_PROVIDER`` is ``cloning_unavailable``.
        """
        try:
            return cloning_provider(self.config)
        except ValueError as exc:
            raise CloningError("cloning_unavailable", str(exc)) from exc

    # -- create ----------------------------------------------------------------------

    async def create(
        self,
        tenant_id: str,
        *,
        name: str,
        files: Sequence[bytes],
        consent: Any,
        actor: str,
        description: str | None = None,
        consent_recording: bytes | None = None,
        consent_recording_mime: str = "application/octet-stream",
    ) -> CloneOutcome:
        """Clone a voice from uploaded audio ``files`` under a consent statement.

        Raises :class:`CloneRequestError` (nothing stored) for a request that
        cannot be cloned, :class:`CloningError` ``cloning_unavailable`` when
        cloning is off. A provider failure is not raised: the voice is stored
        ``failed`` and the outcome carries the error.
        """
        provider = self.provider
        if provider is None:
            raise CloningError("cloning_unavailable", unavailable_message(self.config))
        checked = parse_consent(consent)  # first: without consent nothing else matters
        name = name.strip() if isinstance(name, str) else ""
        if not name or len(name) > 100:
            raise CloneRequestError("invalid_request", "'name' (1-100 characters) is required")
        if not files:
            raise CloneRequestError(
                "invalid_request", "at least one reference audio file is needed"
            )
        cloner = self._factory(provider)
        try:
            if len(files) > cloner.max_samples:
                raise CloneRequestError(
                    "too_many_samples", f"{provider} takes at most {cloner.max_samples} files"
                )
            try:
                samples = await asyncio.to_thread(
                    prepare_samples, list(files), min_seconds=self.config.voice_clone_min_seconds
                )
            except ReferenceAudioError as exc:
                raise CloneRequestError(exc.code, exc.message) from exc
            if consent_recording is not None:
                try:
                    await asyncio.to_thread(decode, consent_recording, 16000)
                except AudioFormatError as exc:
                    raise CloneRequestError(
                        "invalid_audio", f"the consent recording is not audio: {exc}"
                    ) from exc
            return await self._create(
                tenant_id,
                provider=provider,
                cloner=cloner,
                name=name,
                description=description,
                samples=samples,
                hashes=await asyncio.to_thread(
                    lambda: [hashlib.sha256(f).hexdigest() for f in files]
                ),
                consent=checked,
                actor=actor,
                recording=consent_recording,
                recording_mime=consent_recording_mime,
            )
        finally:
            await cloner.close()

    async def _create(
        self,
        tenant_id: str,
        *,
        provider: str,
        cloner: VoiceCloner,
        name: str,
        description: str | None,
        samples: list[AudioChunk],
        hashes: list[str],
        consent: NewConsent,
        actor: str,
        recording: bytes | None,
        recording_mime: str,
    ) -> CloneOutcome:
        voice_id = new_id("voice")
        folder = f"voices/{tenant_id}/{voice_id}"
        keys: list[str] = []
        try:
            for i, sample in enumerate(samples, 1):
                data = wav_bytes(sample.data, sample.sample_rate)
                keys.append(await self.storage.put(f"{folder}/sample-{i}.wav", data, "audio/wav"))
            if recording is not None:
                # Kept as sent, so that its SHA-256 matches the speaker's original.
                mime = recording_mime if AUDIO_MIME.match(recording_mime) else None
                evidence_key = await self.storage.put(
                    f"{folder}/consent-recording", recording, mime or "application/octet-stream"
                )
                consent = replace(
                    consent,
                    evidence_key=evidence_key,
                    evidence_sha256=hashlib.sha256(recording).hexdigest(),
                )
            voice, stored_consent = await self.voices.create_voice(
                tenant_id,
                voice_id=voice_id,
                name=name,
                provider=provider,
                consent=consent,
                actor=actor,
                audio_keys=keys,
                description=description,
                details={
                    "samples": [
                        {"sha256": h, "seconds": round(s.duration, 2)}
                        for h, s in zip(hashes, samples, strict=True)
                    ]
                },
            )
        except BaseException:
            # Nothing is recorded: leave no audio behind without a consent record.
            await self._delete_files([*keys, f"{folder}/consent-recording"])
            raise

        try:
            cloned = await cloner.create(
                name, samples, description=description, labels={"salon_voice_id": voice_id}
            )
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, CloningError)
                else CloningError("cloning_error", "the cloning provider failed unexpectedly")
            )
            if not isinstance(exc, CloningError):
                log.exception("voice_clone_crashed", voice_id=voice_id, provider=provider)
            log.warning("voice_clone_failed", voice_id=voice_id, provider=provider, code=error.code)
            # The samples served only this attempt; the consent record stays.
            await self._delete_files(keys)
            failed = await self.voices.mark_failed(
                tenant_id,
                voice_id,
                code=error.code,
                message=error.message,
                actor=actor,
                audio_deleted=True,
            )
            return CloneOutcome(failed or voice, stored_consent, error)
        return await self._activate(tenant_id, voice, stored_consent, cloned, cloner, actor)

    async def _activate(
        self,
        tenant_id: str,
        voice: VoiceRecord,
        consent: ConsentRecord,
        cloned: ClonedVoice,
        cloner: VoiceCloner,
        actor: str,
    ) -> CloneOutcome:
        reference_key = None
        if cloned.reference is not None:
            reference_key = await self.storage.put(
                f"voices/{tenant_id}/{voice.id}/reference.wav",
                wav_bytes(cloned.reference.data, cloned.reference.sample_rate),
                "audio/wav",
            )
        active = await self.voices.activate(
            tenant_id,
            voice.id,
            provider_voice_id=cloned.provider_voice_id,
            requires_verification=cloned.requires_verification,
            actor=actor,
            reference_key=reference_key,
        )
        if active is not None:
            log.info("voice_cloned", voice_id=voice.id, provider=cloned.provider)
            return CloneOutcome(active, consent)
        # Revoked while the provider worked: undo what it just made.
        log.warning("voice_revoked_while_cloning", voice_id=voice.id)
        ok, details = await self._provider_delete(cloner, cloned.provider_voice_id)
        await self.voices.record_provider_delete(
            tenant_id,
            voice.id,
            ok=ok,
            actor=actor,
            details={"provider": cloned.provider, **details},
        )
        await self._delete_files([*voice.audio_keys, *([reference_key] if reference_key else [])])
        current = await self.voices.get_voice(tenant_id, voice.id)
        return CloneOutcome(current or voice, consent)

    # -- revoke ----------------------------------------------------------------------

    async def revoke(
        self, tenant_id: str, voice_id: str, *, actor: str, reason: str | None = None
    ) -> RevokeOutcome | None:
        """Revoke the voice: never spoken again, deleted at the provider, its audio deleted.

        Idempotent: revoking a revoked voice changes nothing but retries a
        provider deletion or audio deletion that failed before. None when
        the tenant has no such voice.
        """
        revoked = await self.voices.revoke(tenant_id, voice_id, actor=actor, reason=reason)
        if revoked is None:
            return None
        voice, changed = revoked
        if changed:
            log.info("voice_revoked", voice_id=voice_id, provider=voice.provider)
        provider_error: CloningError | None = None
        audio_error: str | None = None
        if voice.provider_voice_id is not None and voice.provider_deleted_at is None:
            try:
                cloner = self._factory(voice.provider)
            except CloningError as exc:
                ok, details, provider_error = False, {"code": exc.code, "message": exc.message}, exc
            else:
                try:
                    ok, details = await self._provider_delete(cloner, voice.provider_voice_id)
                finally:
                    await cloner.close()
                if not ok:
                    provider_error = CloningError(str(details["code"]), str(details["message"]))
            await self.voices.record_provider_delete(
                tenant_id,
                voice_id,
                ok=ok,
                actor=actor,
                details={"provider": voice.provider, **details},
            )
        audio_error = await self._delete_voice_audio(tenant_id, voice, actor)
        self._forget_cached(tenant_id, voice_id)
        current = await self.voices.get_voice(tenant_id, voice_id)
        return RevokeOutcome(current or voice, changed, provider_error, audio_error)

    async def _provider_delete(
        self, cloner: VoiceCloner, provider_voice_id: str
    ) -> tuple[bool, dict[str, Any]]:
        try:
            await cloner.delete(provider_voice_id)
        except CloningError as exc:
            log.warning("voice_provider_delete_failed", provider=cloner.name, code=exc.code)
            return False, {"code": exc.code, "message": exc.message[:500]}
        except Exception:
            log.exception("voice_provider_delete_crashed", provider=cloner.name)
            return False, {"code": "cloning_error", "message": "the provider failed unexpectedly"}
        return True, {}

    async def _delete_voice_audio(
        self, tenant_id: str, voice: VoiceRecord, actor: str
    ) -> str | None:
        consent = await self.voices.get_consent(tenant_id, voice.id)
        keys = [*voice.audio_keys, *([voice.reference_key] if voice.reference_key else [])]
        evidence = consent.evidence_key if consent else None
        if not keys and evidence is None and voice.audio_deleted_at is not None:
            return None  # deleted before (a failed clone, or an earlier revocation)
        try:
            # The consent recording goes too: it is the speaker's voice, enough to
            # clone it again. Its SHA-256 stays in the consent record as evidence.
            await self._delete_files([*keys, *([evidence] if evidence else [])], strict=True)
        except Exception as exc:
            log.warning("voice_audio_delete_failed", voice_id=voice.id, error=type(exc).__name__)
            return f"the stored audio could not be deleted ({type(exc).__name__}); revoke again to retry"
        await self.voices.record_audio_deleted(
            tenant_id, voice.id, actor=actor, deleted=keys, evidence_deleted=evidence is not None
        )
        return None

    async def _delete_files(self, keys: Sequence[str], *, strict: bool = False) -> None:
        for key in keys:
            try:
                await self.storage.delete(key)
            except Exception:
                if strict:
                    raise
                log.warning("voice_file_delete_failed", key=key)

    # -- read ------------------------------------------------------------------------

    async def get(
        self, tenant_id: str, voice_id: str
    ) -> tuple[VoiceRecord, ConsentRecord | None] | None:
        """The voice and its consent record; None when the tenant has no such voice."""
        if not is_cloned_voice_id(voice_id):
            return None
        voice = await self.voices.get_voice(tenant_id, voice_id)
        if voice is None:
            return None
        return voice, await self.voices.get_consent(tenant_id, voice_id)

    # -- resolve ---------------------------------------------------------------------

    async def resolve(
        self, tenant_id: str, settings: VoiceSettings, provider_name: str
    ) -> VoiceSettings:
        """``settings`` with a cloned voice id replaced by what ``provider_name`` speaks with.

        Settings whose ``voice`` is not a Salon voice id come back unchanged.
        ElevenLabs (and any remote provider) gets its own voice id in
        ``voice``; XTTS gets ``reference_audio``, a local path to the stored
        reference recording (``voice`` cleared). Raises
        :class:`VoiceUnavailable` when the voice cannot be used. One indexed
        read per call, no cache: a revocation holds at once on every replica.
        """
        voice_id = settings.voice
        if voice_id is None or not is_cloned_voice_id(voice_id):
            return settings
        voice = await self.voices.get_voice(tenant_id, voice_id)
        if voice is None:
            raise VoiceUnavailable("voice_not_found", f"no cloned voice {voice_id!r}")
        if voice.status == REVOKED:
            self._forget_cached(tenant_id, voice_id)
            raise VoiceUnavailable("voice_revoked", f"voice {voice_id!r} was revoked")
        if voice.status != ACTIVE or voice.provider_voice_id is None:
            state = "is still being cloned" if voice.status == PENDING else "failed to clone"
            raise VoiceUnavailable("voice_not_ready", f"voice {voice_id!r} {state}")
        if voice.provider != provider_name:
            raise VoiceUnavailable(
                "voice_provider_mismatch",
                f"voice {voice_id!r} was cloned with {voice.provider}; "
                f"the speaking provider is {provider_name}",
            )
        if voice.reference_key is None:
            return replace(settings, voice=voice.provider_voice_id)
        path = await self._reference_path(tenant_id, voice_id, voice.reference_key)
        return replace(settings, voice=None, reference_audio=str(path))

    async def _reference_path(self, tenant_id: str, voice_id: str, key: str) -> Path:
        """A local file holding the reference recording (XTTS reads a path)."""
        if isinstance(self.storage, LocalMediaStorage):
            path = self.storage.root.resolve() / key
            if await asyncio.to_thread(path.is_file):
                return path
            raise VoiceUnavailable(
                "voice_not_found", f"the reference audio of {voice_id!r} is gone"
            )
        cached = self._cache_path(tenant_id, voice_id)
        if not await asyncio.to_thread(cached.is_file):
            found = await self.storage.open(key)
            if found is None:
                raise VoiceUnavailable(
                    "voice_not_found", f"the reference audio of {voice_id!r} is gone"
                )
            await asyncio.to_thread(_write_atomic, cached, found[0])
        return cached

    def _cache_path(self, tenant_id: str, voice_id: str) -> Path:
        root = self._cache_dir or Path(tempfile.gettempdir()) / "salon-voices"
        return root / tenant_id / f"{voice_id}.wav"

    def _forget_cached(self, tenant_id: str, voice_id: str) -> None:
        with contextlib.suppress(OSError):
            self._cache_path(tenant_id, voice_id).unlink(missing_ok=True)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
