"""Cloned voices on a real database (SQLite and Postgres): the catalog, the store, the resolver.

:class:`agents.voice_catalog.VoiceCatalog` runs against each backend of
tests/test_store_contract.py's ``STORE_BACKENDS``, real local media storage
and the loopback ElevenLabs fake (or the XTTS cloner, which needs no model).
The HTTP layer is tests/test_voices_api.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from agents.voice_catalog import CloneRequestError, VoiceCatalog, VoiceUnavailable
from media.audio import AudioChunk, read_wav, wav_bytes
from media.storage import LocalMediaStorage, MediaStorage
from media.tts.base import TTSError, VoiceSettings
from media.tts.cloning import ClonedVoice, CloningError, VoiceCloner, build_cloner
from media.tts.elevenlabs_clone import ElevenLabsCloner
from media.voice_config import VoiceConfig
from memory.store import Store
from memory.voices_store import VoiceStore
from tests.fakes.elevenlabs_server import API_KEY, FakeElevenLabs, tone
from tests.test_store_contract import STORE_BACKENDS, _look_under

CONSENT = {
    "speaker_name": "Ada Lovelace",
    "statement": "I agree that Salon clones my voice for the persona Ada.",
    "scope": ["persona:ada"],
    "obtained_at": "2024-05-01",
}
WAV = wav_bytes(tone(2.0, 16000), 16000)


@pytest.fixture(scope="module")
def elevenlabs() -> Iterator[FakeElevenLabs]:
    server = FakeElevenLabs().start()
    yield server
    server.stop()


@pytest.fixture(params=list(STORE_BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_BACKENDS[request.param](request, tmp_path) as s:
        yield s


def voice_config(server: FakeElevenLabs, **fields: Any) -> VoiceConfig:
    values: dict[str, Any] = {
        "voice_cloning_provider": "elevenlabs",
        "tts_elevenlabs_api_key": API_KEY,
        "tts_elevenlabs_base_url": server.base_url,
        "tts_xtts_model_dir": "/models/xtts",
        "tts_timeout_seconds": 5.0,
        **fields,
    }
    return VoiceConfig(**values)


@pytest.fixture
def media(tmp_path: Path) -> LocalMediaStorage:
    return LocalMediaStorage(tmp_path / "media")


@pytest.fixture
def catalog(store: Store, media: LocalMediaStorage, elevenlabs: FakeElevenLabs) -> VoiceCatalog:
    return VoiceCatalog(store, media, voice_config(elevenlabs))


async def _tenant(store: Store, label: str) -> str:
    return (await store.create_tenant(label)).id


async def _clone(catalog: VoiceCatalog, tenant: str, name: str = "Ada", **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "name": name,
        "files": [WAV, WAV],
        "consent": CONSENT,
        "actor": "api_key:key_test",
        **kwargs,
    }
    return await catalog.create(tenant, **options)


def _actions(rows: list[Any]) -> list[str]:
    return [r.action for r in rows]


def _files(media: LocalMediaStorage, tenant: str, voice_id: str) -> list[str]:
    folder = media.root / "voices" / tenant / voice_id
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# -- create ------------------------------------------------------------------------------


async def test_create_records_consent_audio_and_audit(
    store: Store, catalog: VoiceCatalog, media: LocalMediaStorage, elevenlabs: FakeElevenLabs
) -> None:
    tenant = await _tenant(store, "studio")
    outcome = await _clone(
        catalog, tenant, consent_recording=WAV, consent_recording_mime="audio/wav"
    )
    voice, consent = outcome.voice, outcome.consent
    assert outcome.error is None
    assert (voice.status, voice.provider, voice.created_by) == (
        "active",
        "elevenlabs",
        "api_key:key_test",
    )
    assert voice.provider_voice_id in elevenlabs.voices
    assert elevenlabs.voices[voice.provider_voice_id]["labels"] == {"salon_voice_id": voice.id}
    assert _files(media, tenant, voice.id) == ["consent-recording", "sample-1.wav", "sample-2.wav"]
    stored = await media.open(voice.audio_keys[0])
    assert stored is not None and stored[1] == "audio/wav"
    assert read_wav(stored[0]).sample_rate == 24000  # normalized for every provider
    assert consent.speaker_name == "Ada Lovelace" and consent.scope == ["persona:ada"]
    assert consent.recorded_by == "api_key:key_test" and consent.evidence_sha256
    public = voice.to_public(consent)
    assert public["consent"]["evidence"] == {"sha256": consent.evidence_sha256, "stored": True}
    assert "provider_voice_id" not in public and "audio_keys" not in public

    audit = await catalog.voices.list_audit(tenant, voice.id)
    assert _actions(audit) == ["consent_recorded", "created"]
    samples = audit[0].details["samples"]
    assert [s["seconds"] for s in samples] == [2.0, 2.0] and len(samples[0]["sha256"]) == 64
    assert await catalog.voices.get_consent(tenant, voice.id) == consent


async def test_requests_that_cannot_be_cloned_store_nothing(
    store: Store, catalog: VoiceCatalog, media: LocalMediaStorage, elevenlabs: FakeElevenLabs
) -> None:
    tenant = await _tenant(store, "careful")
    sent = len(elevenlabs.clone_requests)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"consent": {**CONSENT, "statement": ""}}, "consent_required"),
        ({"files": [wav_bytes(tone(1.0, 16000), 16000)]}, "audio_too_short"),
        ({"files": [b"this is not audio"]}, "invalid_audio"),
        ({"files": [wav_bytes(b"\x00\x00" * 16000 * 4, 16000)]}, "audio_silent"),
        ({"files": [WAV] * 26}, "too_many_samples"),
        ({"name": "  "}, "invalid_request"),
        ({"consent_recording": b"nope"}, "invalid_audio"),
    ]
    for change, code in cases:
        with pytest.raises(CloneRequestError) as err:
            await _clone(catalog, tenant, **change)
        assert err.value.code == code, change
    assert await catalog.voices.list_voices(tenant) == []
    assert not (media.root / "voices").exists()
    assert len(elevenlabs.clone_requests) == sent


async def test_cloning_off_is_unavailable(store: Store, media: LocalMediaStorage) -> None:
    off = VoiceCatalog(store, media, VoiceConfig(voice_cloning_provider="off"))
    with pytest.raises(CloningError) as err:
        await _clone(off, await _tenant(store, "off"))
    assert err.value.code == "cloning_unavailable" and "SALON_VOICE_CLONING_PROVIDER" in str(
        err.value
    )
    odd = VoiceCatalog(store, media, VoiceConfig(voice_cloning_provider="telepathy"))
    with pytest.raises(CloningError) as err:
        _ = odd.provider
    assert err.value.code == "cloning_unavailable"


async def test_provider_failure_keeps_consent_and_drops_samples(
    store: Store, catalog: VoiceCatalog, media: LocalMediaStorage
) -> None:
    tenant = await _tenant(store, "unlucky")
    outcome = await _clone(catalog, tenant, name="Ada [500]", consent_recording=WAV)
    assert outcome.error is not None and outcome.error.code == "cloning_error"
    voice = outcome.voice
    assert (voice.status, voice.error_code, voice.provider_voice_id) == (
        "failed",
        "cloning_error",
        None,
    )
    assert voice.audio_keys == [] and voice.audio_deleted_at is not None
    assert _files(media, tenant, voice.id) == ["consent-recording"]  # evidence is consent
    assert await catalog.voices.get_consent(tenant, voice.id) is not None
    audit = await catalog.voices.list_audit(tenant, voice.id)
    assert _actions(audit) == ["consent_recorded", "create_failed"]
    assert audit[1].details["code"] == "cloning_error"
    with pytest.raises(VoiceUnavailable) as err:
        await catalog.resolve(tenant, VoiceSettings(voice=voice.id), "elevenlabs")
    assert err.value.code == "voice_not_ready"
    # Revoking a failed voice deletes the consent recording too.
    revoked = await catalog.revoke(tenant, voice.id, actor="api_key:key_test")
    assert revoked is not None and revoked.voice.status == "revoked"
    assert _files(media, tenant, voice.id) == []


# -- revoke --------------------------------------------------------------------------------


async def test_revoke_deletes_everywhere_and_is_idempotent(
    store: Store, catalog: VoiceCatalog, media: LocalMediaStorage, elevenlabs: FakeElevenLabs
) -> None:
    tenant = await _tenant(store, "revoker")
    voice = (await _clone(catalog, tenant, consent_recording=WAV)).voice
    outcome = await catalog.revoke(tenant, voice.id, actor="api_key:key_2", reason="asked by Ada")
    assert outcome is not None and outcome.changed
    assert outcome.provider_error is None and outcome.audio_error is None
    gone = outcome.voice
    assert (gone.status, gone.revoked_by, gone.revoke_reason) == (
        "revoked",
        "api_key:key_2",
        "asked by Ada",
    )
    assert gone.provider_deleted_at is not None and gone.audio_deleted_at is not None
    assert not gone.cleanup_owed
    assert voice.provider_voice_id in elevenlabs.deleted
    assert _files(media, tenant, voice.id) == []
    consent = await catalog.voices.get_consent(tenant, voice.id)
    assert consent is not None and consent.evidence_key is None and consent.evidence_sha256
    trail = _actions(await catalog.voices.list_audit(tenant, voice.id))
    assert trail == [
        "consent_recorded",
        "created",
        "revoked",
        "deleted_at_provider",
        "audio_deleted",
    ]

    again = await catalog.revoke(tenant, voice.id, actor="api_key:key_3", reason="twice")
    assert again is not None and not again.changed
    assert again.voice.revoked_by == "api_key:key_2" and again.voice.revoke_reason == "asked by Ada"
    assert _actions(await catalog.voices.list_audit(tenant, voice.id)) == trail
    with pytest.raises(VoiceUnavailable) as err:
        await catalog.resolve(tenant, VoiceSettings(voice=voice.id), "elevenlabs")
    assert err.value.code == "voice_revoked"
    assert isinstance(err.value, TTSError)  # speaking paths handle it as a TTS failure


async def test_provider_delete_failure_still_revokes_and_a_retry_finishes(
    store: Store, catalog: VoiceCatalog, elevenlabs: FakeElevenLabs
) -> None:
    tenant = await _tenant(store, "stubborn")
    voice = (await _clone(catalog, tenant)).voice
    elevenlabs.delete_failure = 500
    try:
        outcome = await catalog.revoke(tenant, voice.id, actor="api_key:a")
    finally:
        elevenlabs.delete_failure = None
    assert outcome is not None and outcome.voice.status == "revoked"
    assert outcome.provider_error is not None and outcome.provider_error.code == "cloning_error"
    assert outcome.voice.provider_deleted_at is None and outcome.voice.cleanup_owed
    assert outcome.voice.to_public()["revocation"]["provider_deleted"] is False
    assert voice.provider_voice_id in elevenlabs.voices
    with pytest.raises(VoiceUnavailable):  # never spoken again, whatever the provider did
        await catalog.resolve(tenant, VoiceSettings(voice=voice.id), "elevenlabs")

    retry = await catalog.revoke(tenant, voice.id, actor="api_key:b")
    assert retry is not None and not retry.changed and retry.provider_error is None
    assert retry.voice.provider_deleted_at is not None and not retry.voice.cleanup_owed
    assert voice.provider_voice_id not in elevenlabs.voices
    audit = await catalog.voices.list_audit(tenant, voice.id)
    assert _actions(audit)[2:] == [
        "revoked",
        "delete_failed",
        "audio_deleted",
        "deleted_at_provider",
    ]
    assert audit[3].details["code"] == "cloning_error"


class GatedCloner(VoiceCloner):
    """A real cloner that waits for the test before answering (a slow provider)."""

    name = "elevenlabs"

    def __init__(self, inner: VoiceCloner) -> None:
        self.inner = inner
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def create(self, name: str, samples: list[AudioChunk], **kwargs: Any) -> ClonedVoice:
        self.started.set()
        await self.release.wait()
        return await self.inner.create(name, samples, **kwargs)

    async def delete(self, provider_voice_id: str) -> None:
        await self.inner.delete(provider_voice_id)

    async def close(self) -> None:
        await self.inner.close()


async def test_revoked_while_cloning_undoes_the_new_clone(
    store: Store, media: LocalMediaStorage, elevenlabs: FakeElevenLabs
) -> None:
    config = voice_config(elevenlabs)
    gated = GatedCloner(ElevenLabsCloner.from_config(config))
    catalog = VoiceCatalog(
        store,
        media,
        config,
        cloner_factory=lambda name: gated if name == "elevenlabs" else build_cloner(name, config),
    )
    tenant = await _tenant(store, "hasty")
    creating = asyncio.create_task(_clone(catalog, tenant))
    await asyncio.wait_for(gated.started.wait(), 10)
    [pending] = await catalog.voices.list_voices(tenant)
    assert pending.status == "pending"
    with pytest.raises(VoiceUnavailable) as err:
        await catalog.resolve(tenant, VoiceSettings(voice=pending.id), "elevenlabs")
    assert err.value.code == "voice_not_ready"
    revoked = await catalog.revoke(tenant, pending.id, actor="api_key:x", reason="changed my mind")
    assert revoked is not None and revoked.changed
    gated.release.set()
    outcome = await asyncio.wait_for(creating, 10)
    assert outcome.voice.status == "revoked" and outcome.voice.provider_voice_id is None
    made = elevenlabs.clone_requests[-1]["labels"]["salon_voice_id"]
    assert made == pending.id
    assert not any(
        r["labels"] == {"salon_voice_id": pending.id} for r in elevenlabs.voices.values()
    )
    assert _files(media, tenant, pending.id) == []
    trail = _actions(await catalog.voices.list_audit(tenant, pending.id))
    assert trail == ["consent_recorded", "revoked", "audio_deleted", "deleted_at_provider"]


# -- tenants and resolve ---------------------------------------------------------------------


async def test_other_tenants_see_nothing(store: Store, catalog: VoiceCatalog) -> None:
    mine, theirs = await _tenant(store, "mine"), await _tenant(store, "theirs")
    voice = (await _clone(catalog, mine)).voice
    assert await catalog.get(theirs, voice.id) is None
    assert await catalog.voices.list_voices(theirs) == []
    assert await catalog.voices.list_audit(theirs, voice.id) == []
    assert await catalog.voices.get_consent(theirs, voice.id) is None
    assert await catalog.revoke(theirs, voice.id, actor="api_key:evil") is None
    with pytest.raises(VoiceUnavailable) as err:
        await catalog.resolve(theirs, VoiceSettings(voice=voice.id), "elevenlabs")
    assert err.value.code == "voice_not_found"
    found = await catalog.get(mine, voice.id)
    assert found is not None and found[0].status == "active"  # untouched by the attempts
    assert [v.id for v in await catalog.voices.list_voices(mine, status="active")] == [voice.id]
    assert await catalog.voices.list_voices(mine, status="revoked") == []


async def test_resolve_maps_to_the_providers_voice(store: Store, catalog: VoiceCatalog) -> None:
    tenant = await _tenant(store, "speaker")
    voice = (await _clone(catalog, tenant)).voice
    asked = VoiceSettings(voice=voice.id, language="de", speed=1.1)
    resolved = await catalog.resolve(tenant, asked, "elevenlabs")
    assert resolved == VoiceSettings(voice=voice.provider_voice_id, language="de", speed=1.1)
    plain = VoiceSettings(voice="21m00Tcm4TlvDq8ikWAM")
    assert await catalog.resolve(tenant, plain, "elevenlabs") is plain
    assert await catalog.resolve(tenant, VoiceSettings(), "elevenlabs") == VoiceSettings()
    with pytest.raises(VoiceUnavailable) as err:
        await catalog.resolve(tenant, asked, "xtts")
    assert err.value.code == "voice_provider_mismatch" and "elevenlabs" in str(err.value)
    with pytest.raises(VoiceUnavailable) as err:
        await catalog.resolve(tenant, VoiceSettings(voice="voice_" + "0" * 28), "elevenlabs")
    assert err.value.code == "voice_not_found"


class MemoryStorage(MediaStorage):
    """Media storage without local files (an object store, as far as the catalog can tell)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}

    async def put(self, key: str, data: bytes, mime: str) -> str:
        self.files[key] = (data, mime)
        return key

    async def open(self, key: str) -> tuple[bytes, str] | None:
        return self.files.get(key)

    async def delete(self, key: str) -> bool:
        return self.files.pop(key, None) is not None

    async def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.files if k.startswith(prefix + "/"))


@pytest.mark.parametrize("local", [True, False], ids=["local-files", "remote-storage"])
async def test_xtts_voice_resolves_to_its_reference_file(
    store: Store, tmp_path: Path, elevenlabs: FakeElevenLabs, local: bool
) -> None:
    storage: MediaStorage = LocalMediaStorage(tmp_path / "media") if local else MemoryStorage()
    config = voice_config(elevenlabs, voice_cloning_provider="xtts")
    catalog = VoiceCatalog(store, storage, config, cache_dir=tmp_path / "cache")
    tenant = await _tenant(store, "local")
    voice = (await _clone(catalog, tenant)).voice
    assert (voice.status, voice.provider, voice.provider_voice_id) == ("active", "xtts", voice.id)
    assert voice.reference_key == f"voices/{tenant}/{voice.id}/reference.wav"

    resolved = await catalog.resolve(tenant, VoiceSettings(voice=voice.id, language="fr"), "xtts")
    assert resolved.voice is None and resolved.language == "fr"
    assert resolved.reference_audio is not None
    reference = Path(resolved.reference_audio)
    audio = read_wav(reference.read_bytes())
    assert audio.sample_rate == 24000 and audio.duration == pytest.approx(4.5, abs=0.01)
    assert reference.is_relative_to(tmp_path / ("media" if local else "cache"))

    outcome = await catalog.revoke(tenant, voice.id, actor="api_key:k")
    assert outcome is not None and outcome.provider_error is None
    assert not reference.exists()
    if not local:
        assert isinstance(storage, MemoryStorage) and storage.files == {}
    with pytest.raises(VoiceUnavailable) as err:
        await catalog.resolve(tenant, VoiceSettings(voice=voice.id), "xtts")
    assert err.value.code == "voice_revoked"


# -- the tables ------------------------------------------------------------------------------


async def test_audit_rows_cannot_be_changed(store: Store, catalog: VoiceCatalog) -> None:
    tenant = await _tenant(store, "auditor")
    voice = (await _clone(catalog, tenant)).voice
    async with _look_under(store) as conn:
        with pytest.raises(Exception, match="append-only"):
            await conn.execute(text("UPDATE voice_audit SET action = 'nothing'"))
    async with _look_under(store) as conn:
        actions = (await conn.execute(text("SELECT action FROM voice_audit"))).scalars().all()
    assert sorted(actions) == ["consent_recorded", "created"]
    # The store offers no way to change or remove an audit row.
    assert not [
        m for m in dir(VoiceStore) if "audit" in m and m not in ("_add_audit", "list_audit")
    ]
    assert _actions(await catalog.voices.list_audit(tenant, voice.id)) == sorted(actions)


async def test_postgres_row_level_security_hides_voices(
    request: pytest.FixtureRequest, tmp_path: Path, elevenlabs: FakeElevenLabs
) -> None:
    """Postgres only: a query of the app role that forgot its tenant sees no voice row."""
    async with STORE_BACKENDS["postgres"](request, tmp_path) as store:
        catalog = VoiceCatalog(
            store, LocalMediaStorage(tmp_path / "media"), voice_config(elevenlabs)
        )
        tenant = await _tenant(store, "hidden")
        await _clone(catalog, tenant)
    await _check_hidden(request, tenant)


async def _check_hidden(request: pytest.FixtureRequest, tenant: str) -> None:
    import asyncpg

    url: str = request.getfixturevalue("postgres_url")
    conn = await asyncpg.connect(url)  # the app role, as a query that forgot the tenant would
    try:
        flags = await conn.fetch(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
            " WHERE relname = ANY($1::text[]) AND relkind = 'r' ORDER BY relname",
            ["voices", "voice_consents", "voice_audit"],
        )
        assert [tuple(r) for r in flags] == [
            ("voice_audit", True, True),
            ("voice_consents", True, True),
            ("voices", True, True),
        ]
        for table in ("voices", "voice_consents", "voice_audit"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
        async with conn.transaction():
            await conn.execute("SELECT set_config('salon.tenant_id', $1, true)", tenant)
            assert await conn.fetchval("SELECT count(*) FROM voices") == 1
            assert await conn.fetchval("SELECT count(*) FROM voice_audit") == 2
    finally:
        await conn.close()


async def test_migration_0008_downgrades_and_upgrades(store: Store) -> None:
    from alembic import command
    from sqlalchemy import inspect
    from sqlalchemy.engine import Connection

    from memory.migrate import alembic_config

    ours = {"voices", "voice_consents", "voice_audit"}

    def _to(revision: str, up: bool) -> Any:
        def run(conn: Connection) -> set[str]:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT set_config('salon.scope', 'system', true)")
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            (command.upgrade if up else command.downgrade)(cfg, revision)
            return set(inspect(conn).get_table_names())

        return run

    def functions(conn: Connection) -> int:
        if conn.dialect.name != "postgresql":
            return 0
        sql = "SELECT count(*) FROM pg_proc WHERE proname = 'salon_voice_audit_append_only'"
        return int(conn.exec_driver_sql(sql).scalar_one())

    async with store.engine.begin() as conn:
        assert not ours & await conn.run_sync(_to("0007", up=False))
        assert await conn.run_sync(functions) == 0
    async with store.engine.begin() as conn:
        assert ours <= await conn.run_sync(_to("head", up=True))
    tenant = await _tenant(store, "after")
    async with _look_under(store) as conn:
        with pytest.raises(Exception, match="append-only"):
            await conn.execute(
                text(
                    "INSERT INTO voices (id, tenant_id, name, provider, status,"
                    " requires_verification, audio_keys, created_by, created_at)"
                    " VALUES ('voice_x', :t, 'n', 'xtts', 'active', false, '[]', 'a', :at)"
                ),
                {"t": tenant, "at": datetime.now(UTC)},
            )
            await conn.execute(
                text(
                    "INSERT INTO voice_audit (id, tenant_id, voice_id, action, actor, at, details)"
                    " VALUES ('vaud_x', :t, 'voice_x', 'created', 'a', :at, '{}')"
                ),
                {"t": tenant, "at": datetime.now(UTC)},
            )
            await conn.execute(text("UPDATE voice_audit SET actor = 'someone else'"))
