"""Per-sentence style of spoken replies: emotion from sentiment, language, fallback, voice hook."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agents.speech import SentenceSegmenter
from agents.voice import ReplySpeaker, ReplyVoice, persona_voice_fixed
from agents.voice_style import (
    CachedTTS,
    ReplyStyle,
    StyleSettings,
    emotion_of,
    fallback_from_config,
    warm_up,
)
from media.audio import AudioChunk
from media.tts.base import (
    PriorityExecutor,
    TTSCapabilities,
    TTSError,
    TTSProvider,
    VoiceSettings,
    first_audio,
    iterate_in_thread,
)
from media.tts.espeak import EspeakProvider
from media.voice_config import VoiceConfig

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


class RecordingTTS(TTSProvider):
    """0.1 s of silence per word; records (text, voice) of every call."""

    def __init__(
        self, name: str = "main", languages: tuple[str, ...] = ("en",), emotion: bool = True
    ) -> None:
        self.name = name
        self.capabilities = TTSCapabilities(languages=languages, emotion=emotion)
        self.calls: list[tuple[str, VoiceSettings]] = []

    async def synthesize(self, text: str, voice: VoiceSettings) -> AsyncIterator[AudioChunk]:
        self.calls.append((text, voice))
        await asyncio.sleep(0)
        yield AudioChunk(bytes(3200 * len(text.split())), 16000)


class RecordingEspeak(EspeakProvider):
    """The real espeak-ng, remembering the flags of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.flags: list[list[str]] = []

    def arguments(self, voice: VoiceSettings) -> list[str]:
        flags = super().arguments(voice)
        self.flags.append(flags)
        return flags


@pytest.fixture(scope="module", autouse=True)
def lexicons() -> None:
    asyncio.run(warm_up())


async def speak(
    text: str,
    main: TTSProvider,
    *,
    fallback: Any = None,
    voice: VoiceSettings | None = None,
    fixed: frozenset[str] = frozenset(),
    settings: StyleSettings | None = None,
    resolve: Any = None,
) -> tuple[list[dict[str, Any]], ReplySpeaker]:
    """Speak ``text`` (fed in small deltas) with a ReplySpeaker; the events it appended."""
    events: list[dict[str, Any]] = []

    async def append(event: dict[str, Any]) -> None:
        events.append(event)

    async def get_tts() -> TTSProvider:
        return main

    speaker = ReplySpeaker(
        get_tts,
        voice or VoiceSettings(),
        "resp_1",
        append,
        style=settings or StyleSettings(),
        fixed=fixed,
        fallback=fallback,
        resolve_voice=resolve,
        tenant_id="tenant_1",
    )
    for i in range(0, len(text), 7):
        speaker.feed(text[i : i + 7])
    await asyncio.wait_for(speaker.settle(asyncio.Event(), stop=False), 20)
    return events, speaker


# -- emotion ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "emotion"),
    [
        ("I'm so happy to see you again!", "excited"),
        ("That is wonderful news.", "cheerful"),
        ("I hate it when people lie to me, it makes me furious.", "angry"),
        ("I miss her so much, it hurts.", "sad"),
        ("The train leaves at nine.", "neutral"),
    ],
)
def test_emotion_from_sentiment(text: str, emotion: str) -> None:
    assert emotion_of(text) == emotion


async def test_each_sentence_gets_its_own_emotion() -> None:
    main = RecordingTTS()
    await speak("The train leaves at nine. That is wonderful news. I miss her, it hurts.", main)
    assert [v.emotion for _, v in main.calls] == ["neutral", "cheerful", "sad"]


async def test_a_persona_emotion_wins_and_off_means_none() -> None:
    main = RecordingTTS()
    voice = VoiceSettings(emotion="calm")
    await speak("That is wonderful news. Bye.", main, voice=voice, fixed=frozenset({"emotion"}))
    assert {v.emotion for _, v in main.calls} == {"calm"}
    off = RecordingTTS()
    await speak("That is wonderful news.", off, settings=StyleSettings(emotion=False))
    assert [v.emotion for _, v in off.calls] == [None]
    blind = RecordingTTS(emotion=False)  # the provider has no emotion control: not computed
    await speak("That is wonderful news.", blind)
    assert [v.emotion for _, v in blind.calls] == [None]


def test_persona_fixed_fields() -> None:
    assert persona_voice_fixed({"voice": {"language": "de", "emotion": "sad"}}) == {
        "language",
        "emotion",
    }
    assert persona_voice_fixed({"voice": "en-us"}) == frozenset()
    card = {"extensions": {"salon": {"voice": {"language": "fr"}}}}
    assert persona_voice_fixed(card) == {"language"}


# -- language and the fallback provider ------------------------------------------------------

GERMAN = "Guten Morgen, mein Freund. Heute ist das Wetter wirklich schön und warm."
ENGLISH = "Good morning, my friend. The weather is really lovely and warm today."


@needs_espeak
async def test_a_german_reply_is_spoken_by_the_fallback_in_german() -> None:
    main = RecordingTTS(languages=("en",))  # like the bundled Piper voice
    espeak = RecordingEspeak()
    events, speaker = await speak(GERMAN, main, fallback=CachedTTS(lambda: espeak))
    assert main.calls == []  # not one German sentence in the English voice
    assert espeak.flags and all(flags[:2] == ["-v", "de"] for flags in espeak.flags)
    assert speaker.style is not None and speaker.style.language == "de"
    assert {name for name, _ in speaker.style.spoken_by} == {"espeak"}
    done = events[-1]
    assert done["type"] == "response.audio.done" and "error" not in done
    assert done["audio_ms"] > 2000  # real speech came out


@needs_espeak
async def test_an_english_reply_stays_with_the_main_provider() -> None:
    main = RecordingTTS(languages=("en",))
    espeak = RecordingEspeak()
    await speak(ENGLISH, main, fallback=CachedTTS(lambda: espeak))
    assert len(main.calls) == 2 and espeak.flags == []
    assert {v.language for _, v in main.calls} == {"en"}


@needs_espeak
async def test_the_fallback_is_built_once_from_the_configured_name() -> None:
    built: list[str] = []
    fallback = fallback_from_config(VoiceConfig(voice_language_fallback="espeak"))
    assert fallback is not None
    original = fallback._build

    def counting() -> TTSProvider:
        built.append("x")
        return original()

    fallback._build = counting
    for _ in range(2):
        await speak(GERMAN, RecordingTTS(), fallback=fallback)
    assert built == ["x"]
    assert fallback_from_config(VoiceConfig(voice_language_fallback="")) is None
    await fallback.close()


async def test_short_text_does_not_decide_the_language() -> None:
    main = RecordingTTS(languages=("en",))
    style = ReplyStyle(main, VoiceSettings(), fallback=None)
    await style(0, "Ja!", "Ja!")
    assert style.language is None and main.name == style.spoken_by[0][0]
    second = "Das ist wirklich eine schöne Überraschung."
    await style(1, second, "Ja! " + second)
    assert style.language == "de"


async def test_a_persona_language_wins_over_detection() -> None:
    main = RecordingTTS(languages=("*",))
    await speak(GERMAN, main, voice=VoiceSettings(language="en"), fixed=frozenset({"language"}))
    assert {v.language for _, v in main.calls} == {"en"}
    detected = RecordingTTS(languages=("*",))
    await speak(GERMAN, detected, voice=VoiceSettings(language="en"))  # a default, not fixed
    assert {v.language for _, v in detected.calls} == {"de"}
    off = RecordingTTS(languages=("*",))
    await speak(GERMAN, off, settings=StyleSettings(detect_language=False))
    assert {v.language for _, v in off.calls} == {None}


async def test_without_a_fallback_the_main_provider_speaks_anyway() -> None:
    main = RecordingTTS(languages=("en",))
    broken = CachedTTS(lambda: EspeakProvider(binary="no-such-espeak"))
    events, _ = await speak(GERMAN, main, fallback=broken)
    assert len(main.calls) == 2 and "error" not in events[-1]
    assert await broken() is None  # remembered: not rebuilt per sentence


# -- the voice hook (cloned voices) -----------------------------------------------------------


async def test_resolve_voice_is_called_once_per_reply_before_speaking() -> None:
    main = RecordingTTS()
    calls: list[tuple[str, VoiceSettings, str]] = []

    async def resolve(tenant: str, voice: VoiceSettings, provider: str) -> VoiceSettings:
        calls.append((tenant, voice, provider))
        return VoiceSettings(voice="provider_voice_9", language=voice.language)

    await speak(ENGLISH, main, voice=VoiceSettings(voice="voice_abc"), resolve=resolve)
    assert [(t, v.voice, p) for t, v, p in calls] == [("tenant_1", "voice_abc", "main")]
    assert {v.voice for _, v in main.calls} == {"provider_voice_9"}


async def test_a_failing_resolver_keeps_the_text_and_reports_on_audio_done() -> None:
    async def revoked(tenant: str, voice: VoiceSettings, provider: str) -> VoiceSettings:
        raise TTSError("voice 'voice_abc' was revoked", code="voice_revoked")

    main = RecordingTTS()
    events, speaker = await speak(ENGLISH, main, resolve=revoked)
    assert main.calls == []
    assert events == [
        {
            "type": "response.audio.done",
            "response_id": "resp_1",
            "audio_ms": 0,
            "chunks": 0,
            "error": {"code": "voice_revoked", "message": "voice 'voice_abc' was revoked"},
        }
    ]
    assert speaker.heard(ENGLISH, None) == ENGLISH  # as for a TTS failure: the text stands


def test_reply_voice_passes_the_hook_and_tenant_to_its_speakers() -> None:
    async def resolve(tenant: str, voice: VoiceSettings, provider: str) -> VoiceSettings:
        return voice

    async def tts() -> TTSProvider:
        return RecordingTTS()

    voice = ReplyVoice(tts, resolve_voice=resolve, config=VoiceConfig())
    speaker = voice.speaker({}, "r", lambda e: asyncio.sleep(0), True, "tenant_9")
    assert speaker.tenant_id == "tenant_9" and speaker._resolve_voice is resolve
    assert speaker.style_settings == StyleSettings(emotion=True, detect_language=True)
    quiet = ReplyVoice(tts, config=VoiceConfig(voice_emotion="off", voice_detect_language=False))
    assert quiet.speaker({}, "r", lambda e: asyncio.sleep(0)).style_settings == StyleSettings(
        emotion=False, detect_language=False
    )


# -- the first clause and the priority queue ----------------------------------------------------


def test_the_first_piece_ends_at_the_first_clause() -> None:
    seg = SentenceSegmenter(first_clause_words=2)
    out = seg.push("Hello there, it is good to hear from you again. I was, as you know, away.")
    assert out == ["Hello there, ", "it is good to hear from you again."]
    # Only the first piece: later sentences keep their commas.
    assert seg.flush() == " I was, as you know, away."
    one_word = SentenceSegmenter(first_clause_words=2)
    assert one_word.push("Well, I think so. Yes") == ["Well, I think so."]  # "Well," is 1 word
    streamed = SentenceSegmenter(first_clause_words=2)
    assert streamed.push("Hello there,") == []  # "," may be "3,000": wait for the space
    assert streamed.push(" it") == ["Hello there, "]


def test_priority_executor_runs_first_audio_ahead_but_never_starves() -> None:
    executor = PriorityExecutor(1, head_start=0.5)
    gate = threading.Event()
    order: list[str] = []
    blocker = executor.submit(gate.wait)
    time.sleep(0.05)
    jobs = [executor.submit(order.append, "later-1"), executor.submit(order.append, "later-2")]
    jobs.append(executor.submit_first(order.append, "first"))
    gate.set()
    for job in [blocker, *jobs]:
        job.result(timeout=5)
    assert order == ["first", "later-1", "later-2"]
    # Work queued longer than the head start ago keeps its place.
    gate.clear()
    order.clear()
    blocker = executor.submit(gate.wait)
    time.sleep(0.05)
    old = executor.submit(order.append, "old")
    time.sleep(0.6)
    new = executor.submit_first(order.append, "first")
    gate.set()
    for job in (blocker, old, new):
        job.result(timeout=5)
    assert order == ["old", "first"]
    executor.shutdown()


async def test_an_abandoned_queued_synthesis_never_runs() -> None:
    executor = PriorityExecutor(1)
    gate = threading.Event()
    ran: list[str] = []
    executor.submit(gate.wait)

    def produce(stop: threading.Event) -> Iterator[AudioChunk]:
        ran.append("ran")
        yield AudioChunk(b"\0\0", 16000)

    stream = iterate_in_thread(produce, executor=executor)
    waiter = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)
    waiter.cancel()  # the consumer leaves while the job still waits in the queue
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await stream.aclose()  # type: ignore[attr-defined]
    gate.set()
    await asyncio.sleep(0.1)
    assert ran == []
    executor.shutdown()


async def test_the_first_sentence_is_marked_as_first_audio() -> None:
    seen: list[bool] = []

    class Spy(RecordingTTS):
        async def synthesize(self, text: str, voice: VoiceSettings) -> AsyncIterator[AudioChunk]:
            seen.append(first_audio.get())
            yield AudioChunk(b"\0\0" * 160, 16000)

    await speak("One two. Three four. Five.", Spy(), settings=StyleSettings(False, False))
    assert seen == [True, False, False]
