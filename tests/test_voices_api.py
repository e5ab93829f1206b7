"""/v1/voices through a real `salon serve`: consent, uploads, provider failures, revocation.

Cloning goes to the loopback ElevenLabs fake (tests/fakes/elevenlabs_server.py)
through the real app; one server runs on Postgres with XTTS, and the
resolver (:class:`agents.voice_catalog.VoiceCatalog`) then reads what that
server wrote, the way the speaking paths will.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.voice_catalog import VoiceCatalog, VoiceUnavailable
from media.audio import read_wav, wav_bytes
from media.storage import LocalMediaStorage
from media.tts.base import VoiceSettings
from media.voice_config import VoiceConfig
from memory.db import create_engine, normalize_database_url
from memory.store import Store
from tests.conftest import SALON_BIN, ServerProcess, connect, server_env
from tests.fakes.elevenlabs_server import API_KEY, FakeElevenLabs, tone
from tests.fakes.openai_server import FakeOpenAI

MAX_BYTES = 300_000
CONSENT = {
    "speaker_name": "Ada Lovelace",
    "statement": "I, Ada Lovelace, agree that my voice is cloned for the persona Ada.",
    "scope": ["persona:ada", "audio/speech"],
    "obtained_at": "2024-05-01T09:00:00Z",
}
WAV = wav_bytes(tone(2.0, 16000), 16000)  # 64 KB, 2 s: two of them pass the 3 s minimum


@pytest.fixture(scope="module")
def elevenlabs() -> Iterator[FakeElevenLabs]:
    server = FakeElevenLabs().start()
    yield server
    server.stop()


def _env(data_dir: Path, fake_llm: FakeOpenAI, **extra: str) -> dict[str, str]:
    return server_env(
        data_dir,
        fake_llm,
        SALON_VOICE_CLONE_MAX_BYTES=str(MAX_BYTES),
        SALON_VOICE_REQUESTS_PER_MINUTE="1000",
        SALON_TTS_TIMEOUT_SECONDS="1",
        **extra,
    )


@pytest.fixture(scope="module")
def srv(
    fake_llm: FakeOpenAI, elevenlabs: FakeElevenLabs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("salon-voices")
    env = _env(
        data_dir,
        fake_llm,
        SALON_TTS_ELEVENLABS_API_KEY=API_KEY,
        SALON_TTS_ELEVENLABS_BASE_URL=elevenlabs.base_url,
    )
    proc = ServerProcess(data_dir, env).start()
    yield proc
    proc.stop()


def clone(
    srv: ServerProcess,
    *,
    name: str = "Ada",
    files: tuple[bytes, ...] = (WAV, WAV),
    consent: Any = CONSENT,
    headers: dict[str, str] | None = None,
    recording: bytes | None = None,
) -> httpx.Response:
    data = {"name": name}
    if consent is not None:
        data["consent"] = consent if isinstance(consent, str) else json.dumps(consent)
    parts = [("file", (f"take-{i}.wav", f, "audio/wav")) for i, f in enumerate(files, 1)]
    if recording is not None:
        parts.append(("consent_recording", ("consent.wav", recording, "audio/wav")))
    return httpx.post(
        srv.url + "/v1/voices",
        data=data,
        files=parts,
        headers=srv.auth if headers is None else headers,
        timeout=30,
    )


def _error(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


def _voice_dir(srv: ServerProcess, voice_id: str) -> Path:
    return srv.data_dir / "media" / "voices" / "ten_default" / voice_id


def _files(srv: ServerProcess, voice_id: str) -> list[str]:
    folder = _voice_dir(srv, voice_id)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _audit(srv: ServerProcess, voice_id: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{srv.url}/v1/voices/{voice_id}/audit", headers=srv.auth)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def _provider_id(fake: FakeElevenLabs, voice_id: str) -> str | None:
    for provider_id, record in fake.voices.items():
        if record["labels"] == {"salon_voice_id": voice_id}:
            return provider_id
    return None


def test_create_with_consent(srv: ServerProcess, elevenlabs: FakeElevenLabs) -> None:
    r = clone(srv, recording=WAV)
    assert r.status_code == 201, r.text
    voice = r.json()
    assert r.headers["location"] == f"/v1/voices/{voice['id']}"
    assert voice["id"].startswith("voice_") and voice["object"] == "voice"
    assert (voice["status"], voice["provider"], voice["samples"]) == ("active", "elevenlabs", 2)
    assert voice["created_by"].startswith("api_key:key_")
    consent = voice["consent"]
    assert consent["speaker_name"] == "Ada Lovelace"
    assert consent["statement"] == CONSENT["statement"]
    assert consent["scope"] == ["persona:ada", "audio/speech"]
    assert consent["obtained_at"] == "2024-05-01T09:00:00+00:00"
    assert consent["recorded_by"] == voice["created_by"]
    assert consent["evidence"]["stored"] is True and len(consent["evidence"]["sha256"]) == 64
    # Never the audio, where it is stored, or the provider's own id.
    text = r.text
    assert "voices/" not in text and "RIFF" not in text
    provider_id = _provider_id(elevenlabs, voice["id"])
    assert provider_id is not None and provider_id not in text
    sent = elevenlabs.clone_requests[-1]
    assert [f["head"] for f in sent["files"]] == [b"RIFF", b"RIFF"] and sent["name"] == "Ada"
    assert _files(srv, voice["id"]) == ["consent-recording", "sample-1.wav", "sample-2.wav"]

    got = httpx.get(f"{srv.url}/v1/voices/{voice['id']}", headers=srv.auth)
    assert got.status_code == 200 and got.json() == voice
    listed = httpx.get(srv.url + "/v1/voices", headers=srv.auth).json()["data"]
    assert voice["id"] in [v["id"] for v in listed]
    assert "consent" not in listed[0]
    audit = _audit(srv, voice["id"])
    assert [a["action"] for a in audit] == ["consent_recorded", "created"]
    assert {a["actor"] for a in audit} == {voice["created_by"]}
    assert audit[0]["details"]["speaker_name"] == "Ada Lovelace"


@pytest.mark.parametrize(
    ("consent", "words"),
    [
        (None, "consent record is required"),
        ({k: v for k, v in CONSENT.items() if k != "statement"}, "statement"),
        ({**CONSENT, "scope": []}, "scope"),
        ({**CONSENT, "obtained_at": "2999-01-01"}, "future"),
        ("{not json", "JSON object"),
    ],
)
def test_no_clone_without_a_complete_consent(
    srv: ServerProcess, elevenlabs: FakeElevenLabs, consent: Any, words: str
) -> None:
    before = len(elevenlabs.clone_requests)
    count = len(httpx.get(srv.url + "/v1/voices", headers=srv.auth).json()["data"])
    r = clone(srv, consent=consent)
    assert r.status_code == 400 and _error(r) == "consent_required", r.text
    assert words in r.json()["error"]["message"]
    assert len(elevenlabs.clone_requests) == before
    assert len(httpx.get(srv.url + "/v1/voices", headers=srv.auth).json()["data"]) == count


def test_oversized_uploads_are_refused(srv: ServerProcess, elevenlabs: FakeElevenLabs) -> None:
    before = len(elevenlabs.clone_requests)
    big = wav_bytes(tone(5.0, 32000), 32000)  # 320 KB > 300 KB
    r = clone(srv, files=(big,))
    assert r.status_code == 413 and _error(r) == "file_too_large"
    # Without a Content-Length (chunked), the bytes themselves are counted.
    body = b"".join(
        [
            b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n',
            b"Content-Type: audio/wav\r\n\r\n",
            big,
            b"\r\n--xx--\r\n",
        ]
    )
    r = httpx.post(
        srv.url + "/v1/voices",
        content=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
        headers={**srv.auth, "Content-Type": "multipart/form-data; boundary=xx"},
    )
    assert r.status_code == 413 and _error(r) == "file_too_large"
    # Under the body limit (which leaves room for the form) but over the audio limit.
    r = clone(srv, files=(WAV, WAV, WAV, WAV, WAV[:50_000]))
    assert r.status_code == 413 and _error(r) == "file_too_large"
    assert len(elevenlabs.clone_requests) == before


@pytest.mark.parametrize(
    ("files", "code"),
    [
        ((wav_bytes(tone(1.0, 16000), 16000),), "audio_too_short"),
        ((b"GIF89a this is not audio",), "invalid_audio"),
        ((wav_bytes(b"\x00\x00" * 16000 * 4, 16000),), "audio_silent"),
        ((WAV, b""), "invalid_request"),
    ],
)
def test_unusable_audio_is_refused(
    srv: ServerProcess, elevenlabs: FakeElevenLabs, files: tuple[bytes, ...], code: str
) -> None:
    before = len(elevenlabs.clone_requests)
    r = clone(srv, files=files)
    assert r.status_code == 400 and _error(r) == code, r.text
    assert len(elevenlabs.clone_requests) == before


def _new_tenant(srv: ServerProcess, name: str) -> dict[str, str]:
    r = subprocess.run(
        [SALON_BIN, "tenants", "create", name],
        env=dict(srv.env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1].strip()
    assert key.startswith("sk_salon_"), r.stdout
    return {"Authorization": f"Bearer {key}"}


def test_voices_are_tenant_scoped_and_need_an_api_key(srv: ServerProcess) -> None:
    voice = clone(srv).json()
    base = f"{srv.url}/v1/voices/{voice['id']}"
    other = _new_tenant(srv, "Other studio")
    for method, url in (("GET", base), ("GET", base + "/audit"), ("DELETE", base)):
        r = httpx.request(method, url, headers=other)
        assert r.status_code == 404 and _error(r) == "voice_not_found", (method, url)
    assert httpx.get(srv.url + "/v1/voices", headers=other).json() == {"data": []}
    # Still there, untouched, for its owner.
    mine = httpx.get(base, headers=srv.auth).json()
    assert mine["status"] == "active"
    assert [a["action"] for a in _audit(srv, voice["id"])] == ["consent_recorded", "created"]

    assert httpx.get(srv.url + "/v1/voices").status_code == 401
    token = httpx.post(
        srv.url + "/v1/sessions", json={"user": {"id": "someone"}}, headers=srv.auth
    ).json()["token"]
    session = {"Authorization": f"Bearer {token}"}
    assert httpx.get(base, headers=session).status_code == 403
    assert clone(srv, headers=session).status_code == 403
    assert httpx.get(srv.url + "/v1/voices/not-a-voice", headers=srv.auth).status_code == 404


def test_revoke_deletes_at_the_provider_and_the_audio(
    srv: ServerProcess, elevenlabs: FakeElevenLabs
) -> None:
    voice = clone(srv, recording=WAV).json()
    provider_id = _provider_id(elevenlabs, voice["id"])
    assert provider_id is not None and _files(srv, voice["id"])
    r = httpx.request(
        "DELETE",
        f"{srv.url}/v1/voices/{voice['id']}",
        json={"reason": "the speaker withdrew consent"},
        headers=srv.auth,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "revoked" and body["warnings"] == []
    revocation = body["revocation"]
    assert revocation["reason"] == "the speaker withdrew consent"
    assert revocation["revoked_by"] == voice["created_by"]
    assert revocation["provider_deleted"] is True and revocation["audio_deleted"] is True
    assert provider_id in elevenlabs.deleted and provider_id not in elevenlabs.voices
    assert _files(srv, voice["id"]) == []
    assert body["consent"]["evidence"]["stored"] is False  # the hash stays as evidence
    assert body["consent"]["evidence"]["sha256"] == voice["consent"]["evidence"]["sha256"]
    trail = [a["action"] for a in _audit(srv, voice["id"])]
    assert trail == [
        "consent_recorded",
        "created",
        "revoked",
        "deleted_at_provider",
        "audio_deleted",
    ]

    again = httpx.delete(f"{srv.url}/v1/voices/{voice['id']}?reason=again", headers=srv.auth)
    assert again.status_code == 200
    assert {**again.json(), "warnings": []} == body  # the same state, the first reason kept
    assert [a["action"] for a in _audit(srv, voice["id"])] == trail
    listed = httpx.get(srv.url + "/v1/voices?status=revoked", headers=srv.auth).json()["data"]
    assert voice["id"] in [v["id"] for v in listed]
    assert httpx.get(srv.url + "/v1/voices?status=gone", headers=srv.auth).status_code == 400


def test_provider_delete_failure_still_revokes(
    srv: ServerProcess, elevenlabs: FakeElevenLabs
) -> None:
    voice = clone(srv).json()
    provider_id = _provider_id(elevenlabs, voice["id"])
    elevenlabs.delete_failure = 500
    try:
        r = httpx.delete(f"{srv.url}/v1/voices/{voice['id']}", headers=srv.auth)
    finally:
        elevenlabs.delete_failure = None
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "revoked"
    assert body["revocation"]["provider_deleted"] is False
    assert body["revocation"]["audio_deleted"] is True
    [warning] = body["warnings"]
    assert warning["code"] == "delete_failed" and "revoke again" in warning["message"]
    assert provider_id in elevenlabs.voices
    audit = _audit(srv, voice["id"])
    assert [a["action"] for a in audit][2:] == ["revoked", "delete_failed", "audio_deleted"]
    assert audit[3]["details"]["code"] == "cloning_error"

    retry = httpx.delete(f"{srv.url}/v1/voices/{voice['id']}", headers=srv.auth).json()
    assert retry["warnings"] == [] and retry["revocation"]["provider_deleted"] is True
    assert provider_id not in elevenlabs.voices
    assert [a["action"] for a in _audit(srv, voice["id"])][-1] == "deleted_at_provider"


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("Ada [500]", 502, "cloning_error"),
        ("Ada [slow]", 504, "cloning_timeout"),
        ("Ada [422]", 422, "cloning_bad_request"),
    ],
)
def test_provider_failures_keep_the_consent_record(
    srv: ServerProcess, name: str, status: int, code: str
) -> None:
    r = clone(srv, name=name)
    assert r.status_code == status, r.text
    assert _error(r) == code
    voice = r.json()["voice"]
    assert voice["status"] == "failed" and voice["error"]["code"] == code
    assert voice["samples"] == 0 and _files(srv, voice["id"]) == []
    got = httpx.get(f"{srv.url}/v1/voices/{voice['id']}", headers=srv.auth).json()
    assert got["consent"]["speaker_name"] == "Ada Lovelace"
    audit = _audit(srv, voice["id"])
    assert [a["action"] for a in audit] == ["consent_recorded", "create_failed"]
    assert audit[1]["details"]["code"] == code


def test_cloning_off_says_what_to_set(make_server: Any) -> None:
    off: ServerProcess = make_server(SALON_VOICE_CLONING_PROVIDER="off")
    r = clone(off)
    assert r.status_code == 503 and _error(r) == "cloning_unavailable"
    assert "SALON_VOICE_CLONING_PROVIDER" in r.json()["error"]["message"]
    assert httpx.get(off.url + "/v1/voices", headers=off.auth).json() == {"data": []}


async def test_xtts_on_postgres_and_the_resolver(
    fake_llm: FakeOpenAI, postgres_url: str, tmp_path: Path
) -> None:
    """XTTS clones on a Postgres server; the resolver finds the reference, then refuses it."""
    data_dir = tmp_path / "salon-xtts"
    models = tmp_path / "xtts-model"
    models.mkdir()
    env = _env(
        data_dir,
        fake_llm,
        SALON_DATABASE_URL=postgres_url,
        SALON_VOICE_CLONING_PROVIDER="xtts",
        SALON_TTS_XTTS_MODEL_DIR=str(models),
    )
    srv = ServerProcess(data_dir, env).start()
    store = Store(create_engine(normalize_database_url(postgres_url, tmp_path)))
    try:
        r = clone(srv)
        assert r.status_code == 201, r.text
        voice = r.json()
        assert voice["provider"] == "xtts" and voice["status"] == "active"
        assert _files(srv, voice["id"]) == ["reference.wav", "sample-1.wav", "sample-2.wav"]

        catalog = VoiceCatalog(
            store,
            LocalMediaStorage(data_dir / "media"),
            VoiceConfig(voice_cloning_provider="xtts", tts_xtts_model_dir=models),
        )
        resolved = await catalog.resolve("ten_default", VoiceSettings(voice=voice["id"]), "xtts")
        assert resolved.reference_audio is not None
        assert Path(resolved.reference_audio) == _voice_dir(srv, voice["id"]) / "reference.wav"
        assert read_wav(Path(resolved.reference_audio).read_bytes()).duration > 4
        with pytest.raises(VoiceUnavailable) as err:
            await catalog.resolve("ten_default", VoiceSettings(voice=voice["id"]), "elevenlabs")
        assert err.value.code == "voice_provider_mismatch"

        r = httpx.delete(f"{srv.url}/v1/voices/{voice['id']}", headers=srv.auth)
        assert r.status_code == 200 and r.json()["warnings"] == []
        assert _files(srv, voice["id"]) == []
        with pytest.raises(VoiceUnavailable) as err:
            await catalog.resolve("ten_default", VoiceSettings(voice=voice["id"]), "xtts")
        assert err.value.code == "voice_revoked"
    finally:
        await store.close()
        srv.stop()


def test_speech_with_a_cloned_voice_until_it_is_revoked(
    make_server: Any, elevenlabs: FakeElevenLabs
) -> None:
    """``/v1/audio/speech`` speaks a cloned voice by its Salon id, and refuses it once revoked."""
    srv = make_server(
        SALON_TTS_PROVIDER="elevenlabs",
        SALON_TTS_ELEVENLABS_API_KEY=API_KEY,
        SALON_TTS_ELEVENLABS_BASE_URL=elevenlabs.base_url,
        SALON_VOICE_REQUESTS_PER_MINUTE="1000",
    )
    voice = clone(srv).json()
    provider_id = _provider_id(elevenlabs, voice["id"])
    assert provider_id is not None

    def speak(voice_id: str) -> httpx.Response:
        return httpx.post(
            srv.url + "/v1/audio/speech",
            json={"input": "Hello there.", "voice": voice_id, "response_format": "pcm"},
            headers=srv.auth,
            timeout=30,
        )

    r = speak(voice["id"])
    assert r.status_code == 200, r.text
    assert len(r.content) > 1000
    assert elevenlabs.requests[-1]["voice_id"] == provider_id  # the provider's id, not ours

    assert httpx.delete(f"{srv.url}/v1/voices/{voice['id']}", headers=srv.auth).status_code == 200
    spoken = len(elevenlabs.requests)
    r = speak(voice["id"])
    assert r.status_code == 410 and r.json()["error"]["code"] == "voice_revoked"
    assert len(elevenlabs.requests) == spoken  # nothing was sent to the provider
    r = speak("voice_" + "0" * 28)
    assert r.status_code == 404 and r.json()["error"]["code"] == "voice_not_found"


async def test_a_persona_speaks_with_its_cloned_voice_over_the_socket(
    make_server: Any, elevenlabs: FakeElevenLabs
) -> None:
    """A persona whose voice is a clone's Salon id is spoken with the provider's clone id."""
    srv = make_server(
        SALON_TTS_PROVIDER="elevenlabs",
        SALON_TTS_ELEVENLABS_API_KEY=API_KEY,
        SALON_TTS_ELEVENLABS_BASE_URL=elevenlabs.base_url,
        SALON_VOICE_REQUESTS_PER_MINUTE="1000",
        SALON_VOICE_DETECT_LANGUAGE="false",
    )
    voice = clone(srv).json()
    provider_id = _provider_id(elevenlabs, voice["id"])
    persona = srv.create_persona(voice={"provider": "elevenlabs", "voice": voice["id"]})

    async def spoken_reply(user: str) -> list[dict[str, Any]]:
        c = await connect(srv)
        await c.start(persona["id"], user=user, modalities=["text", "audio"])
        await c.send({"type": "message.create", "id": "m1", "text": "hello"})
        await c.until("response.done", timeout=20)
        await c.close()
        return [e for e in c.events if e["type"].startswith("response.audio")]

    events = await spoken_reply("first")
    assert any(e["type"] == "response.audio.delta" for e in events)
    assert elevenlabs.requests[-1]["voice_id"] == provider_id

    assert httpx.delete(f"{srv.url}/v1/voices/{voice['id']}", headers=srv.auth).status_code == 200
    spoken = len(elevenlabs.requests)
    events = await spoken_reply("second")
    done = next(e for e in events if e["type"] == "response.audio.done")
    assert not any(e["type"] == "response.audio.delta" for e in events)
    assert done["error"]["code"] == "voice_revoked"  # the text reply went on without audio
    assert len(elevenlabs.requests) == spoken
