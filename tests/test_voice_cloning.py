"""Voice cloners (media/tts/cloning.py and its implementations) and the consent check.

ElevenLabs is exercised against the loopback fake speaking its real
multipart wire format (tests/fakes/elevenlabs_server.py); XTTS needs no model
to clone. The workflow around them (store, catalog, HTTP) is in
tests/test_voices_store.py and tests/test_voices_api.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from agents.voice_catalog import CloneRequestError, is_cloned_voice_id, parse_consent
from media.audio import AudioChunk, codec_available, encode, read_wav
from media.tts.cloning import (
    CloningError,
    build_cloner,
    cloning_provider,
    create_cloner,
    unavailable_message,
)
from media.tts.elevenlabs_clone import ElevenLabsCloner
from media.tts.xtts_clone import GAP_SECONDS, REFERENCE_RATE, XTTSCloner
from media.voice_config import VoiceConfig
from memory.ids import new_id
from tests.fakes.elevenlabs_server import API_KEY, FakeElevenLabs, tone
from tests.fakes.openai_server import free_port


@pytest.fixture(scope="module")
def elevenlabs() -> Iterator[FakeElevenLabs]:
    server = FakeElevenLabs().start()
    yield server
    server.stop()


def config(**fields: object) -> VoiceConfig:
    """Settings from ``fields`` only: the environment of the test run does not leak in."""
    base: dict[str, object] = {
        "voice_cloning_provider": "auto",
        "tts_elevenlabs_api_key": None,
        "tts_xtts_model_dir": None,
    }
    return VoiceConfig(**{**base, **fields})  # type: ignore[arg-type]


def sample(seconds: float = 2.0, rate: int = 16000) -> AudioChunk:
    return AudioChunk(tone(seconds, rate), rate)


def cloner(server: FakeElevenLabs, **kwargs: object) -> ElevenLabsCloner:
    options: dict[str, object] = {"api_key": API_KEY, "base_url": server.base_url, **kwargs}
    return ElevenLabsCloner(**options)  # type: ignore[arg-type]


# -- registry ---------------------------------------------------------------------


def test_auto_picks_elevenlabs_then_xtts_then_nothing(tmp_path: object) -> None:
    both = config(tts_elevenlabs_api_key=SecretStr("k"), tts_xtts_model_dir="/models/xtts")
    assert cloning_provider(both) == "elevenlabs"
    assert cloning_provider(config(tts_xtts_model_dir="/models/xtts")) == "xtts"
    assert cloning_provider(config()) is None
    assert create_cloner(config()) is None
    message = unavailable_message(config())
    assert "SALON_TTS_ELEVENLABS_API_KEY" in message and "SALON_VOICE_CLONING_PROVIDER" in message
    # Named explicitly, "off" wins over configured keys.
    keyed_off = config(voice_cloning_provider="off", tts_elevenlabs_api_key=SecretStr("k"))
    assert cloning_provider(keyed_off) is None
    picked = config(voice_cloning_provider="xtts", tts_xtts_model_dir="/m")
    assert isinstance(create_cloner(picked), XTTSCloner)


async def test_named_providers_say_what_to_set() -> None:
    with pytest.raises(CloningError) as err:
        create_cloner(config(voice_cloning_provider="elevenlabs"))
    assert err.value.code == "cloning_unavailable"
    assert "SALON_TTS_ELEVENLABS_API_KEY" in err.value.message
    with pytest.raises(CloningError) as err:
        create_cloner(config(voice_cloning_provider="xtts"))
    assert err.value.code == "cloning_unavailable"
    assert "SALON_TTS_XTTS_MODEL_DIR" in err.value.message
    with pytest.raises(ValueError, match="unknown voice cloning provider 'nope'"):
        cloning_provider(config(voice_cloning_provider="nope"))
    with pytest.raises(CloningError) as err:
        build_cloner("nope", config())
    assert err.value.code == "cloning_unavailable"


async def test_elevenlabs_cloner_uses_the_tts_settings(elevenlabs: FakeElevenLabs) -> None:
    settings = config(
        tts_elevenlabs_api_key=SecretStr(API_KEY),
        tts_elevenlabs_base_url=elevenlabs.base_url,
        tts_timeout_seconds=7.0,
    )
    made = create_cloner(settings)
    assert isinstance(made, ElevenLabsCloner)
    try:
        assert str(made._client.base_url).rstrip("/") == elevenlabs.base_url
        assert made._client.headers["xi-api-key"] == API_KEY
        assert made._client.timeout.read == 7.0
    finally:
        await made.close()


# -- ElevenLabs ---------------------------------------------------------------------


async def test_elevenlabs_clone_speaks_the_real_multipart_format(
    elevenlabs: FakeElevenLabs,
) -> None:
    c = cloner(elevenlabs)
    try:
        cloned = await c.create(
            "Ada's voice",
            [sample(2.0, 16000), sample(1.5, 24000)],
            description="warm, low",
            labels={"salon_voice_id": "voice_x"},
        )
    finally:
        await c.close()
    assert cloned.provider == "elevenlabs" and cloned.reference is None
    assert cloned.requires_verification is False
    assert cloned.provider_voice_id in elevenlabs.voices
    sent = elevenlabs.clone_requests[-1]
    assert sent["name"] == "Ada's voice" and sent["description"] == "warm, low"
    assert sent["labels"] == {"salon_voice_id": "voice_x"}
    assert sent["remove_background_noise"] == "false"
    files = sent["files"]
    assert [f["filename"] for f in files] == ["sample-1.wav", "sample-2.wav"]
    assert {f["content_type"] for f in files} == {"audio/wav"}
    assert [f["head"] for f in files] == [b"RIFF", b"RIFF"]
    # WAV header (44 bytes) + the samples as sent, nothing resampled on the way.
    assert [f["size"] for f in files] == [44 + 2 * 32000, 44 + 2 * 36000]


async def test_elevenlabs_verification_and_delete(elevenlabs: FakeElevenLabs) -> None:
    c = cloner(elevenlabs)
    try:
        cloned = await c.create("pro [verify]", [sample()])
        assert cloned.requires_verification is True
        await c.delete(cloned.provider_voice_id)
        assert cloned.provider_voice_id in elevenlabs.deleted
        assert cloned.provider_voice_id not in elevenlabs.voices
        await c.delete(cloned.provider_voice_id)  # gone already (404): what deleting wants
        with pytest.raises(CloningError) as err:
            await c.delete("../voices")
        assert err.value.code == "cloning_bad_request"
    finally:
        await c.close()


@pytest.mark.parametrize(
    ("name", "code", "words"),
    [
        ("noisy [422]", "cloning_bad_request", "audio too noisy"),
        ("busy [429]", "cloning_rate_limited", "Too many concurrent requests"),
        ("broken [500]", "cloning_error", "HTTP 500"),
    ],
)
async def test_elevenlabs_errors_map_to_codes(
    elevenlabs: FakeElevenLabs, name: str, code: str, words: str
) -> None:
    c = cloner(elevenlabs)
    try:
        with pytest.raises(CloningError) as err:
            await c.create(name, [sample()])
    finally:
        await c.close()
    assert err.value.code == code
    assert words in err.value.message


async def test_elevenlabs_wrong_key_is_unavailable_and_the_key_is_not_echoed(
    elevenlabs: FakeElevenLabs,
) -> None:
    c = cloner(elevenlabs, api_key="sk-wrong-secret-key")
    try:
        with pytest.raises(CloningError) as err:
            await c.create("Ada", [sample()])
        with pytest.raises(CloningError) as delete_err:
            await c.delete("abc")
    finally:
        await c.close()
    assert err.value.code == delete_err.value.code == "cloning_unavailable"
    assert "SALON_TTS_ELEVENLABS_API_KEY" in err.value.message
    assert "sk-wrong-secret-key" not in err.value.message


async def test_elevenlabs_timeout_unreachable_and_delete_failure(
    elevenlabs: FakeElevenLabs,
) -> None:
    c = cloner(elevenlabs, timeout=0.5)
    try:
        with pytest.raises(CloningError) as err:
            await c.create("slow [slow]", [sample()])
        assert err.value.code == "cloning_timeout"
        kept = await c.create("Ada", [sample()])
        elevenlabs.delete_failure = 503
        try:
            with pytest.raises(CloningError) as delete_err:
                await c.delete(kept.provider_voice_id)
        finally:
            elevenlabs.delete_failure = None
        assert delete_err.value.code == "cloning_error"
        assert kept.provider_voice_id in elevenlabs.voices
    finally:
        await c.close()
    away = ElevenLabsCloner(api_key=API_KEY, base_url=f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(CloningError) as err:
            await away.create("Ada", [sample()])
    finally:
        await away.close()
    assert err.value.code == "cloning_error" and "reach" in err.value.message


async def test_elevenlabs_refuses_no_and_too_many_samples(elevenlabs: FakeElevenLabs) -> None:
    c = cloner(elevenlabs)
    before = len(elevenlabs.clone_requests)
    try:
        for samples in ([], [sample(0.1)] * 26):
            with pytest.raises(CloningError) as err:
                await c.create("Ada", samples)
            assert err.value.code == "cloning_bad_request"
    finally:
        await c.close()
    assert len(elevenlabs.clone_requests) == before  # refused before anything was sent


# -- XTTS -----------------------------------------------------------------------------


async def test_xtts_clone_is_its_joined_reference(tmp_path: object) -> None:
    c = XTTSCloner(model_dir="/models/xtts")
    first, second = sample(1.0, 16000), sample(2.0, 24000)
    cloned = await c.create("Ada", [first, second], labels={"salon_voice_id": "voice_abc"})
    assert (cloned.provider, cloned.provider_voice_id) == ("xtts", "voice_abc")
    assert cloned.reference is not None and cloned.reference.sample_rate == REFERENCE_RATE
    assert cloned.reference.duration == pytest.approx(1.0 + GAP_SECONDS + 2.0, abs=0.01)
    # The gap between the samples is silence; the samples themselves are not.
    gap_start = int(REFERENCE_RATE * 1.0) * 2
    assert cloned.reference.data[gap_start + 100 : gap_start + 1000] == b"\x00" * 900
    assert cloned.reference.data[:2000] != b"\x00" * 2000
    anonymous = await c.create("Ada", [first])
    assert anonymous.provider_voice_id.startswith("xtts_")
    await c.delete("voice_abc")  # nothing at the provider: no error, no effect
    with pytest.raises(CloningError) as err:
        await c.create("Ada", [AudioChunk(b"", 16000)])
    assert err.value.code == "cloning_bad_request"
    with pytest.raises(CloningError) as err:
        XTTSCloner(model_dir=None)
    assert err.value.code == "cloning_unavailable"
    # What the catalog stores is a WAV the XTTS provider can read.
    from media.audio import wav_bytes

    reread = read_wav(wav_bytes(cloned.reference.data, cloned.reference.sample_rate))
    assert reread.sample_rate == REFERENCE_RATE


# -- consent -------------------------------------------------------------------------


CONSENT = {
    "speaker_name": "Ada Lovelace",
    "statement": "I agree that Salon clones my voice for the persona Ada.",
    "scope": ["persona:ada", "tts"],
    "obtained_at": "2024-05-01",
}


def test_consent_fields_are_parsed() -> None:
    parsed = parse_consent(CONSENT)
    assert parsed.speaker_name == "Ada Lovelace"
    assert parsed.scope == ["persona:ada", "tts"]
    assert parsed.obtained_at == datetime(2024, 5, 1, tzinfo=UTC)
    timed = parse_consent({**CONSENT, "obtained_at": "2024-05-01T10:30:00Z", "scope": "tts"})
    assert timed.obtained_at == datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    assert timed.scope == ["tts"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"speaker_name": None}, "speaker_name"),
        ({"statement": "  "}, "statement"),
        ({"scope": []}, "scope"),
        ({"scope": ["ok", 3]}, "scope"),
        ({"obtained_at": None}, "obtained_at"),
        ({"obtained_at": "last tuesday"}, "ISO 8601"),
        ({"obtained_at": (datetime.now(UTC) + timedelta(days=2)).isoformat()}, "future"),
    ],
)
def test_incomplete_consent_is_refused(change: dict[str, object], words: str) -> None:
    raw = {k: v for k, v in {**CONSENT, **change}.items() if v is not None}
    with pytest.raises(CloneRequestError) as err:
        parse_consent(raw)
    assert err.value.code == "consent_required"
    assert words in err.value.message


def test_consent_must_be_an_object_and_voice_ids_are_strict() -> None:
    for raw in (None, "yes", ["I agree"]):
        with pytest.raises(CloneRequestError) as err:
            parse_consent(raw)
        assert err.value.code == "consent_required"
    assert is_cloned_voice_id(new_id("voice"))
    for other in (None, "voice_", "voice_../../etc", "21m00Tcm4TlvDq8ikWAM", new_id("feed")):
        assert not is_cloned_voice_id(other)


# -- reference audio ---------------------------------------------------------------------


def test_prepare_samples_normalizes_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    from media.audio import wav_bytes
    from media.tts import cloning

    stereo_44k = wav_bytes(tone(2.0, 44100), 44100, channels=2)  # 1 s of stereo
    mono_16k = wav_bytes(tone(2.0, 16000), 16000)
    samples = cloning.prepare_samples([stereo_44k, mono_16k], min_seconds=3.0)
    assert [s.sample_rate for s in samples] == [cloning.SAMPLE_RATE] * 2
    assert [s.channels for s in samples] == [1, 1]
    assert [round(s.duration, 2) for s in samples] == [1.0, 2.0]
    monkeypatch.setattr(cloning, "MAX_TOTAL_SECONDS", 2.5)
    with pytest.raises(cloning.ReferenceAudioError) as err:
        cloning.prepare_samples([stereo_44k, mono_16k], min_seconds=1.0)
    assert err.value.code == "audio_too_long"


@pytest.mark.skipif(not codec_available("mp3"), reason="PyAV (voice extra) not installed")
def test_prepare_samples_reads_compressed_uploads() -> None:
    from media.tts.cloning import SAMPLE_RATE, prepare_samples

    mp3 = encode(tone(4.0, 24000), 24000, "mp3")
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF
    [sample] = prepare_samples([mp3], min_seconds=3.0)
    assert sample.sample_rate == SAMPLE_RATE and 3.9 < sample.duration < 4.2
