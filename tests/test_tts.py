"""TTS providers: espeak-ng and Piper for real, ElevenLabs and OpenAI against loopback fakes."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from media.audio import (
    AudioChunk,
    codec_available,
    decode,
    encode,
    parse_wav_header,
    read_wav,
    resample,
    streaming_wav_header,
    wav_bytes,
)
from media.tts.base import TTSError, TTSProvider, VoiceSettings
from media.tts.elevenlabs import ElevenLabsProvider
from media.tts.espeak import EspeakProvider
from media.tts.openai_tts import OpenAITTSProvider
from media.tts.registry import create_tts
from media.tts.xtts import XTTSProvider
from media.voice_config import VoiceConfig
from tests.fakes.elevenlabs_server import API_KEY, FakeElevenLabs
from tests.fakes.openai_server import FakeOpenAIAudio

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is installed by scripts/test"
)
has_piper = importlib.util.find_spec("piper") is not None


def sine(seconds: float, rate: int) -> bytes:
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
        for i in range(int(seconds * rate))
    )


def rms(pcm: bytes) -> float:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


# -- audio helpers --------------------------------------------------------------------


def test_wav_round_trip_and_streaming_header() -> None:
    pcm = sine(0.5, 16000)
    chunk = read_wav(wav_bytes(pcm, 16000))
    assert chunk == AudioChunk(pcm, 16000)
    assert chunk.duration == 0.5
    # A streamed WAV (unknown length) parses too, as espeak-ng writes them.
    assert parse_wav_header(streaming_wav_header(22050) + pcm[:100]) == (22050, 1, 44)
    with pytest.raises(ValueError):
        parse_wav_header(b"OggS" + b"\0" * 40)


def test_resample_keeps_duration() -> None:
    pcm = sine(1.0, 22050)
    out = resample(pcm, 22050, 16000)
    assert len(out) == 2 * 16000
    assert abs(rms(out) - rms(pcm)) < 0.05 * rms(pcm)


@pytest.mark.parametrize("fmt", ["mp3", "opus"])
def test_compressed_formats_round_trip(fmt: str) -> None:
    if not codec_available(fmt):
        pytest.skip("PyAV (voice extra) not installed")
    data = encode(sine(1.0, 22050), 22050, fmt)
    assert data[:4] in (b"ID3\x04", b"OggS") or data[:2] == b"\xff\xfb"
    back = decode(data, 16000)
    assert back.sample_rate == 16000
    assert 0.9 < back.duration < 1.2


# -- espeak-ng (real binary) ------------------------------------------------------------


@needs_espeak
async def test_espeak_streams_pcm_with_its_rate() -> None:
    tts = EspeakProvider()
    await tts.start()
    chunks = [c async for c in tts.synthesize("Hello there, how are you?", VoiceSettings())]
    assert chunks and all(c.sample_rate == 22050 for c in chunks)
    assert all(len(c.data) % 2 == 0 for c in chunks)
    audio = b"".join(c.data for c in chunks)
    assert 0.8 < len(audio) / 2 / 22050 < 4
    assert rms(audio) > 300  # not silence


@needs_espeak
async def test_espeak_speed_language_and_openai_voice_names() -> None:
    tts = EspeakProvider()
    normal = await tts.synthesize_all("one two three four five six", VoiceSettings())
    fast = await tts.synthesize_all("one two three four five six", VoiceSettings(speed=2.0))
    assert fast.duration < normal.duration * 0.75
    # "alloy" is an OpenAI voice name: it means "the default voice" here.
    alloy = await tts.synthesize_all("hello", VoiceSettings(voice="alloy"))
    assert alloy.duration > 0.2
    german = await tts.synthesize_all("Guten Tag", VoiceSettings(voice="de"))
    assert german.duration > 0.2


def test_espeak_emotion_and_language_flags() -> None:
    tts = EspeakProvider()
    assert tts.arguments(VoiceSettings()) == ["-v", "en-us", "-s", "175"]
    sad = tts.arguments(VoiceSettings(emotion="sad"))
    assert sad == ["-v", "en-us", "-p", "38", "-a", "85", "-s", str(round(175 * 0.88))]
    excited = tts.arguments(VoiceSettings(emotion="Excited", speed=1.2))
    assert excited[2:6] == ["-p", "70", "-a", "115"] and excited[-1] == str(round(175 * 1.2 * 1.15))
    # No mapping (neutral, or a free-text emotion): plain flags.
    assert tts.arguments(VoiceSettings(emotion="whispering")) == tts.arguments(VoiceSettings())
    # A language hint picks the voice when the id is for another language; a variant stays.
    assert tts.arguments(VoiceSettings(voice="en-us", language="de"))[:2] == ["-v", "de"]
    assert tts.arguments(VoiceSettings(voice="en-us+f3", language="fr"))[:2] == ["-v", "fr+f3"]
    assert tts.arguments(VoiceSettings(voice="en-gb", language="en-US"))[:2] == ["-v", "en-gb"]
    assert tts.arguments(VoiceSettings(language="de"))[:2] == ["-v", "de"]
    assert tts.capabilities.emotion and tts.capabilities.speaks("sw")


@needs_espeak
async def test_espeak_sad_is_slower_than_excited() -> None:
    tts = EspeakProvider()
    text = "one two three four five six seven eight"
    sad = await tts.synthesize_all(text, VoiceSettings(emotion="sad"))
    excited = await tts.synthesize_all(text, VoiceSettings(emotion="excited"))
    assert sad.duration > excited.duration * 1.15


def test_capabilities_speak_by_primary_language() -> None:
    from media.tts.base import TTSCapabilities

    english = TTSCapabilities(languages=("en",))
    assert english.speaks("en-GB") and english.speaks("EN_us") and not english.speaks("de")
    assert TTSCapabilities(languages=("zh-cn",)).speaks("zh")
    assert TTSCapabilities(languages=("*",)).speaks("ja")


@needs_espeak
async def test_espeak_unknown_voice_is_a_bad_request() -> None:
    with pytest.raises(TTSError) as err:
        await EspeakProvider().synthesize_all("hello", VoiceSettings(voice="bogusvoice"))
    assert err.value.code == "tts_bad_request"


async def test_espeak_missing_binary_names_the_package() -> None:
    tts = EspeakProvider(binary="espeak-ng-not-here")
    with pytest.raises(TTSError, match="apt-get install espeak-ng") as err:
        await tts.start()
    assert err.value.code == "tts_unavailable"


@needs_espeak
async def test_espeak_cancel_kills_the_process() -> None:
    tts = EspeakProvider()
    stream = tts.synthesize("word " * 2000, VoiceSettings())
    first = await anext(stream)
    assert first.data
    await stream.aclose()  # type: ignore[attr-defined]  # must return promptly, killing espeak-ng


# -- Piper (real model, voice extra) --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not has_piper, reason="piper-tts is in the voice-piper extra")
async def test_piper_speaks_with_the_bundled_voice() -> None:
    from media.tts.piper import PiperProvider

    tts = PiperProvider()
    await tts.start()
    chunks = [
        c async for c in tts.synthesize("Good morning. The weather is fine today.", VoiceSettings())
    ]
    assert len(chunks) == 2  # one per sentence Piper found
    assert {c.sample_rate for c in chunks} == {22050}
    audio = b"".join(c.data for c in chunks)
    assert 1.0 < len(audio) / 2 / 22050 < 6
    assert rms(audio) > 300
    slow = await tts.synthesize_all("Good morning.", VoiceSettings(speed=0.5))
    quick = await tts.synthesize_all("Good morning.", VoiceSettings(speed=1.5))
    assert slow.duration > quick.duration * 1.5
    await tts.close()


async def test_piper_missing_voice_file_is_clear(tmp_path: Path) -> None:
    from media.tts.piper import PiperProvider

    tts = PiperProvider(model_path=tmp_path / "nope.onnx")
    with pytest.raises(TTSError) as err:
        await tts.start()
    assert err.value.code == "tts_unavailable"
    assert "not found" in str(err.value) or "piper-tts" in str(err.value)


def test_piper_emotion_as_pace_and_noise_and_its_languages(tmp_path: Path) -> None:
    from media.tts.piper import PiperProvider

    tts = PiperProvider()
    assert tts.capabilities.languages == ("en",) and tts.capabilities.emotion
    assert tts.synthesis_config(VoiceSettings(speed=2.0)) == {"length_scale": 0.5}
    assert tts.synthesis_config(VoiceSettings(emotion="neutral")) == {"length_scale": 1.0}
    sad = tts.synthesis_config(VoiceSettings(emotion="sad"))
    assert sad == {"length_scale": pytest.approx(1.18), "noise_scale": 0.5, "noise_w_scale": 0.6}
    excited = tts.synthesis_config(VoiceSettings(emotion="excited"))
    assert excited["length_scale"] < 1.0 < sad["length_scale"]
    assert excited["noise_scale"] > 0.667 > sad["noise_scale"]  # livelier / flatter than default
    # Another voice declares its language in its .onnx.json.
    (tmp_path / "de.onnx.json").write_text('{"language": {"code": "de_DE"}}')
    german = PiperProvider(model_path=tmp_path / "de.onnx")
    assert german.capabilities.languages == ("de-DE",) and german.capabilities.speaks("de")
    # 2 threads per inference, at least 2 inferences at once (docs/voice.md, "Latency").
    cores = os.cpu_count() or 1
    assert tts.threads == min(cores, 2) and tts.workers == max(2, cores // tts.threads)


@pytest.mark.slow
@pytest.mark.skipif(not has_piper, reason="piper-tts is in the voice-piper extra")
async def test_piper_sad_is_slower_than_excited() -> None:
    from media.tts.piper import PiperProvider

    tts = PiperProvider()
    text = "I did not expect to see you here today."

    async def seconds(emotion: str) -> float:
        # Piper samples phoneme lengths (noise_w), so one sentence's ratio varies from about
        # 1.1 to 1.25 between runs: compare three takes of each.
        takes = [await tts.synthesize_all(text, VoiceSettings(emotion=emotion)) for _ in range(3)]
        return sum(take.duration for take in takes)

    sad, excited = await seconds("sad"), await seconds("excited")
    await tts.close()
    assert sad > excited * 1.1


# -- ElevenLabs (loopback fake of its HTTP API) ---------------------------------------------


@pytest.fixture(scope="module")
def elevenlabs() -> Iterator[FakeElevenLabs]:
    server = FakeElevenLabs().start()
    yield server
    server.stop()


def eleven(server: FakeElevenLabs, **kwargs: object) -> ElevenLabsProvider:
    options: dict[str, object] = {"api_key": API_KEY, "base_url": server.base_url, **kwargs}
    return ElevenLabsProvider(**options)  # type: ignore[arg-type]


async def test_elevenlabs_streams_pcm_over_its_wire_format(elevenlabs: FakeElevenLabs) -> None:
    tts = eleven(elevenlabs, sample_rate=16000, model="eleven_turbo_v2_5")
    chunks = [
        c
        async for c in tts.synthesize(
            "one two three four five", VoiceSettings(voice="voice123", language="en", speed=1.1)
        )
    ]
    await tts.close()
    # The fake sends 1001-byte pieces: every chunk still holds whole samples.
    assert all(len(c.data) % 2 == 0 and c.sample_rate == 16000 for c in chunks)
    assert len(b"".join(c.data for c in chunks)) == 2 * int(0.2 * 5 * 16000)
    request = elevenlabs.requests[-1]
    assert request["voice_id"] == "voice123"
    assert request["query"] == {"output_format": "pcm_16000"}
    assert request["body"]["model_id"] == "eleven_turbo_v2_5"
    assert request["body"]["language_code"] == "en"
    assert request["body"]["voice_settings"] == {"speed": 1.1}


async def test_elevenlabs_emotion_as_voice_settings(elevenlabs: FakeElevenLabs) -> None:
    tts = eleven(elevenlabs, model="eleven_multilingual_v2")
    assert tts.capabilities.emotion
    await tts.synthesize_all("hi", VoiceSettings(emotion="excited", language="de-DE"))
    body = elevenlabs.requests[-1]["body"]
    assert body["voice_settings"] == {"stability": 0.3, "similarity_boost": 0.75, "style": 0.6}
    assert "language_code" not in body  # multilingual v2 refuses it (and detects by itself)
    # The persona's own voice_settings win over the emotion's.
    persona = VoiceSettings(emotion="sad", extra={"voice_settings": {"stability": 0.9}})
    await tts.synthesize_all("hi", persona)
    assert elevenlabs.requests[-1]["body"]["voice_settings"] == {
        "stability": 0.9,
        "similarity_boost": 0.75,
        "style": 0.3,
    }
    await tts.synthesize_all("hi", VoiceSettings(emotion="neutral"))
    assert "voice_settings" not in elevenlabs.requests[-1]["body"]
    await tts.close()
    flash = eleven(elevenlabs)  # eleven_flash_v2_5 takes language_code, as ISO 639-1
    await flash.synthesize_all("hi", VoiceSettings(language="de-DE"))
    await flash.close()
    assert elevenlabs.requests[-1]["body"]["language_code"] == "de"


async def test_elevenlabs_default_voice_for_openai_names(elevenlabs: FakeElevenLabs) -> None:
    tts = eleven(elevenlabs, default_voice="myvoice")
    await tts.synthesize_all("hi", VoiceSettings(voice="alloy"))
    await tts.close()
    assert elevenlabs.requests[-1]["voice_id"] == "myvoice"
    assert elevenlabs.requests[-1]["query"] == {"output_format": "pcm_24000"}


@pytest.mark.parametrize(
    ("key", "text", "voice", "code", "words"),
    [
        ("wrong", "hi", None, "tts_unavailable", "SALON_TTS_ELEVENLABS_API_KEY"),
        (API_KEY, "hi", "missing", "tts_bad_request", "voice"),
        (API_KEY, "[500] hi", None, "tts_error", "HTTP 500"),
    ],
)
async def test_elevenlabs_errors_are_clear(
    elevenlabs: FakeElevenLabs, key: str, text: str, voice: str | None, code: str, words: str
) -> None:
    tts = ElevenLabsProvider(api_key=key, base_url=elevenlabs.base_url)
    with pytest.raises(TTSError) as err:
        await tts.synthesize_all(text, VoiceSettings(voice=voice))
    await tts.close()
    assert err.value.code == code
    assert words in str(err.value)


def test_elevenlabs_without_a_key_names_the_setting() -> None:
    with pytest.raises(TTSError, match="SALON_TTS_ELEVENLABS_API_KEY"):
        ElevenLabsProvider(api_key=None)


async def test_elevenlabs_unreachable(elevenlabs: FakeElevenLabs) -> None:
    tts = ElevenLabsProvider(api_key=API_KEY, base_url="http://127.0.0.1:9")
    with pytest.raises(TTSError) as err:
        await tts.synthesize_all("hi")
    await tts.close()
    assert err.value.code == "tts_unavailable"


@pytest.mark.timeout(20)
async def test_elevenlabs_cancel_aborts_the_request(elevenlabs: FakeElevenLabs) -> None:
    import asyncio

    tts = eleven(elevenlabs)
    aborted = elevenlabs.aborted
    stream = tts.synthesize("[slow] " + "word " * 200, VoiceSettings())
    assert (await anext(stream)).data
    await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(100):
        if elevenlabs.aborted > aborted:
            break
        await asyncio.sleep(0.05)
    await tts.close()
    assert elevenlabs.aborted == aborted + 1


# -- OpenAI TTS (loopback fake) ---------------------------------------------------------


@pytest.fixture(scope="module")
def openai_audio() -> Iterator[FakeOpenAIAudio]:
    server = FakeOpenAIAudio().start()
    yield server
    server.stop()


async def test_openai_tts_emotion_as_instructions(openai_audio: FakeOpenAIAudio) -> None:
    tts = OpenAITTSProvider(api_key="k", base_url=openai_audio.base_url)  # gpt-4o-mini-tts
    assert tts.capabilities.emotion
    await tts.synthesize_all("hi", VoiceSettings(emotion="sad"))
    assert (
        openai_audio.speech_requests[-1]["instructions"] == "Speak softly, in a sad, subdued tone."
    )
    await tts.synthesize_all("hi", VoiceSettings(emotion="neutral"))
    assert "instructions" not in openai_audio.speech_requests[-1]
    await tts.close()
    # tts-1 takes no instructions: none are sent, and it says so.
    old = OpenAITTSProvider(api_key="k", base_url=openai_audio.base_url, model="tts-1")
    assert not old.capabilities.emotion
    await old.synthesize_all("hi", VoiceSettings(emotion="sad"))
    await old.close()
    assert "instructions" not in openai_audio.speech_requests[-1]


async def test_openai_tts_streams_pcm_24k(openai_audio: FakeOpenAIAudio) -> None:
    tts = OpenAITTSProvider(
        api_key="k", base_url=openai_audio.base_url, model="gpt-4o-mini-tts-2025-03-20"
    )
    chunks = [
        c
        async for c in tts.synthesize(
            "one two three", VoiceSettings(voice="nova", speed=1.5, emotion="cheerful")
        )
    ]
    await tts.close()
    assert {c.sample_rate for c in chunks} == {24000}
    assert all(len(c.data) % 2 == 0 for c in chunks)  # 4801-byte pieces re-aligned
    assert sum(len(c.data) for c in chunks) == 2 * int(0.2 * 3 * 24000)
    request = openai_audio.speech_requests[-1]
    assert request["model"] == "gpt-4o-mini-tts-2025-03-20"
    assert request["voice"] == "nova"
    assert request["response_format"] == "pcm"
    assert request["speed"] == 1.5
    assert "cheerful" in request["instructions"]


async def test_openai_tts_errors(openai_audio: FakeOpenAIAudio) -> None:
    tts = OpenAITTSProvider(api_key="k", base_url=openai_audio.base_url)
    with pytest.raises(TTSError) as err:
        await tts.synthesize_all("[500] hi")
    await tts.close()
    assert err.value.code == "tts_error"
    with pytest.raises(TTSError, match="SALON_TTS_OPENAI_API_KEY"):
        OpenAITTSProvider(api_key=None)


# -- XTTS (error paths; weights are not available here) -----------------------------------


async def test_xtts_needs_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(TTSError, match="SALON_TTS_XTTS_MODEL_DIR"):
        XTTSProvider(model_dir=None)
    tts = XTTSProvider(model_dir=tmp_path, speaker_wav=tmp_path / "ref.wav")
    with pytest.raises(TTSError) as err:
        await tts.start()
    assert err.value.code == "tts_unavailable"
    # Without coqui-tts the package is named; with it, the missing config.json is.
    assert "coqui-tts" in str(err.value) or "config.json" in str(err.value)


def test_xtts_languages_and_no_emotion() -> None:
    from media.tts.xtts import xtts_language

    assert [xtts_language(x) for x in (None, "de-AT", "zh", "ZH-CN", "sw")] == [
        "en",
        "de",
        "zh-cn",
        "zh-cn",
        "en",
    ]
    assert not XTTSProvider.capabilities.emotion and XTTSProvider.capabilities.speaks("zh")


async def test_xtts_needs_a_reference_voice(tmp_path: Path) -> None:
    tts = XTTSProvider(model_dir=tmp_path)
    with pytest.raises(TTSError, match="SALON_TTS_XTTS_SPEAKER_WAV") as err:
        await tts.synthesize_all("hello")
    assert err.value.code == "tts_bad_request"


# -- registry -------------------------------------------------------------------------


def test_registry_default_is_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    tts: TTSProvider = create_tts(VoiceConfig())
    assert tts.name == ("piper" if has_piper else "espeak")
    assert tts.capabilities.local
    import media.tts.piper as piper_module

    monkeypatch.setattr(piper_module, "piper_available", lambda: False)
    assert create_tts(VoiceConfig()).name == "espeak"
    assert create_tts(VoiceConfig(tts_provider="espeak-ng")).name == "espeak"


def test_registry_errors_name_what_to_set() -> None:
    with pytest.raises(ValueError, match="known: elevenlabs, espeak, openai, piper, xtts"):
        create_tts(VoiceConfig(tts_provider="festival"))
    with pytest.raises(TTSError, match="SALON_TTS_ELEVENLABS_API_KEY"):
        create_tts(VoiceConfig(tts_provider="elevenlabs"))
    with pytest.raises(TTSError, match="SALON_TTS_OPENAI_API_KEY"):
        create_tts(VoiceConfig(tts_provider="openai"))


def test_registry_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALON_TTS_PROVIDER", "elevenlabs")
    monkeypatch.setenv("SALON_TTS_ELEVENLABS_API_KEY", "xi")
    monkeypatch.setenv("SALON_TTS_ELEVENLABS_SAMPLE_RATE", "16000")
    tts = create_tts()
    assert isinstance(tts, ElevenLabsProvider)
    assert tts.sample_rate == 16000
    assert tts.capabilities.cloning and not tts.capabilities.local


def test_decode_reads_float_wav_with_pyav() -> None:
    if not codec_available("mp3"):
        pytest.skip("PyAV (voice extra) not installed")
    # A 32-bit float WAV, as browsers' recorders often produce.
    samples = [math.sin(2 * math.pi * 440 * i / 16000) * 0.5 for i in range(16000)]
    raw = struct.pack(f"<{len(samples)}f", *samples)
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    data = (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(raw))
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(raw))
        + raw
    )
    chunk = decode(data, 16000)
    assert chunk.duration == pytest.approx(1.0, abs=0.01)
    assert rms(chunk.data) > 10000


# -- one contract, every implementation ----------------------------------------------------

CONTRACT_PROVIDERS = ["espeak", "piper", "elevenlabs", "openai"]


@pytest.fixture(params=CONTRACT_PROVIDERS)
async def any_tts(
    request: pytest.FixtureRequest, elevenlabs: FakeElevenLabs, openai_audio: FakeOpenAIAudio
) -> AsyncIterator[TTSProvider]:
    name = request.param
    if name == "espeak" and shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is installed by scripts/test")
    if name == "piper" and not has_piper:
        pytest.skip("piper-tts is in the voice-piper extra")
    config = VoiceConfig(
        tts_provider=name,
        tts_elevenlabs_api_key=API_KEY,  # type: ignore[arg-type]
        tts_elevenlabs_base_url=elevenlabs.base_url,
        tts_openai_api_key="k",  # type: ignore[arg-type]
        tts_openai_base_url=openai_audio.base_url,
    )
    provider = create_tts(config)
    await provider.start()
    yield provider
    await provider.close()


async def test_contract_streams_whole_samples_at_one_rate(any_tts: TTSProvider) -> None:
    chunks = [c async for c in any_tts.synthesize("Hello there, friend.", VoiceSettings())]
    assert chunks
    assert len({c.sample_rate for c in chunks}) == 1
    assert all(c.channels == 1 and len(c.data) % 2 == 0 for c in chunks)
    assert sum(c.duration for c in chunks) > 0.3
    caps = any_tts.capabilities
    assert caps.streaming and "pcm" in caps.output_formats and caps.languages


async def test_contract_empty_text_is_silence(any_tts: TTSProvider) -> None:
    assert [c async for c in any_tts.synthesize("   ", VoiceSettings())] == []


async def test_contract_early_close_and_reuse(any_tts: TTSProvider) -> None:
    stream = any_tts.synthesize("One two three. Four five six. Seven eight nine.", VoiceSettings())
    assert (await anext(stream)).data
    await stream.aclose()  # type: ignore[attr-defined]
    # The provider is still usable after a cancelled call.
    again = await any_tts.synthesize_all("Fine.", VoiceSettings(speed=1.2))
    assert again.duration > 0.1
