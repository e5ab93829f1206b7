"""agents/speech.py: the streaming sentence segmenter and the speaking pipeline (fake TTS)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agents.speech import SentenceSegmenter, SpeechStream, speakable
from media.audio import AudioChunk
from media.tts.base import TTSError, TTSProvider, VoiceSettings


def segment(text: str, step: int = 1) -> list[str]:
    """Feed ``text`` ``step`` characters at a time; the stripped sentences."""
    seg = SentenceSegmenter()
    out: list[str] = []
    for i in range(0, len(text), step):
        out.extend(seg.push(text[i : i + step]))
    tail = seg.flush()
    if tail is not None:
        out.append(tail)
    assert "".join(out) == text  # nothing lost, nothing added
    return [s.strip() for s in out]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Hello there. How are you? I'm fine!",
            ["Hello there.", "How are you?", "I'm fine!"],
        ),
        (
            "Dr. Smith paid $3.50 for it. Then Mrs. Jones left.",
            ["Dr. Smith paid $3.50 for it.", "Then Mrs. Jones left."],
        ),
        ("Pi is about 3.14159. Nice.", ["Pi is about 3.14159.", "Nice."]),
        ("We use e.g. apples. They are fine.", ["We use e.g. apples.", "They are fine."]),
        ("J. K. Rowling wrote it. Read it.", ["J. K. Rowling wrote it.", "Read it."]),
        ("See example.com for more. Bye.", ["See example.com for more.", "Bye."]),
        ("Well... maybe not. Wait… What?", ["Well... maybe not.", "Wait…", "What?"]),
        ("Really?! Yes.", ["Really?!", "Yes."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ("(This is an aside.) Next one.", ["(This is an aside.)", "Next one."]),
        (
            "今日は晴れです。明日は雨でしょう！本当？",  # noqa: RUF001 (CJK marks on purpose)
            ["今日は晴れです。", "明日は雨でしょう！", "本当？"],  # noqa: RUF001
        ),
        ("「はい。」次です。", ["「はい。」", "次です。"]),
        ("Great job! 🎉 See you soon 👋", ["Great job!", "🎉 See you soon 👋"]),
        ("Done. 🎉🎉", ["Done.", "🎉🎉"]),
        (
            "Items:\n1. First thing\n2. Second thing",
            ["Items:", "1. First thing", "2. Second thing"],
        ),
        ("I have 3 apples. 5 are left.", ["I have 3 apples.", "5 are left."]),
        ("no punctuation at all", ["no punctuation at all"]),
        ("Ends with a space. ", ["Ends with a space."]),
    ],
)
@pytest.mark.parametrize("step", [1, 4, 1000])
def test_segmenter_cuts_sentences(text: str, expected: list[str], step: int) -> None:
    assert [s for s in segment(text, step) if s] == expected


def test_segmenter_cuts_as_soon_as_a_boundary_is_certain() -> None:
    seg = SentenceSegmenter()
    assert seg.push("Hello there") == []
    assert seg.push(".") == []  # could be "there.com" or "3.5"
    assert seg.push(" ") == []  # could be "Dr. Who"
    assert seg.push("How") == ["Hello there."]
    assert seg.push(" are you?") == []
    assert seg.push(" Fine") == [" How are you?"]
    assert seg.flush() == " Fine"
    assert seg.flush() is None


def test_segmenter_cuts_cjk_without_a_following_space() -> None:
    seg = SentenceSegmenter()
    assert seg.push("你好。") == []  # a closing quote may follow
    assert seg.push("我") == ["你好。"]


def test_segmenter_splits_a_long_run_on_sentence_at_a_clause() -> None:
    seg = SentenceSegmenter(max_chars=60)
    text = "this goes on and on, " * 10
    out = seg.push(text)
    assert out and all(len(s) <= 60 for s in out)
    assert out[0].endswith(", ")
    assert "".join(out) + (seg.flush() or "") == text


def test_speakable_drops_emoji_and_markup() -> None:
    assert speakable("**Great** job! 🎉 See you 👋") == "Great job! See you"
    assert speakable("🎉🎉") == ""


# -- the pipeline with a fake TTS ----------------------------------------------------


class FakeTTS(TTSProvider):
    """0.3 s of audio per word in two chunks, rendered at ``delay`` per chunk; records calls."""

    name = "fake"

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.log: list[tuple[str, str]] = []  # ("start"|"end"|"closed", text)

    async def synthesize(self, text: str, voice: VoiceSettings) -> AsyncIterator[AudioChunk]:
        self.log.append(("start", text))
        if self.fail_on and self.fail_on in text:
            raise TTSError("fake failure", code="tts_error")
        samples = 4800 * len(text.split())  # 0.3 s per word at 16 kHz
        try:
            for half in (samples // 2, samples - samples // 2):
                await asyncio.sleep(self.delay)
                yield AudioChunk(b"\x01\x00" * half, 16000)
            self.log.append(("end", text))
        finally:
            if self.log[-1] != ("end", text):
                self.log.append(("closed", text))


async def deltas(text: str, delay: float = 0.0) -> AsyncIterator[str]:
    for i in range(0, len(text), 3):
        yield text[i : i + 3]
        if delay:
            await asyncio.sleep(delay)


REPLY = "One two. Three four five. Six seven eight nine. Ten."


@pytest.mark.timeout(10)
async def test_pipeline_yields_audio_in_sentence_order() -> None:
    tts = FakeTTS()
    stream = SpeechStream(deltas(REPLY, 0.001), tts)
    chunks = [c async for c in stream]
    assert [c.index for c in chunks] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [s.text.strip() for s in stream.sentences] == [
        "One two.",
        "Three four five.",
        "Six seven eight nine.",
        "Ten.",
    ]
    # Offsets run on without gaps: each sentence starts where the previous ended.
    assert [round(s.start, 3) for s in stream.sentences] == [0.0, 0.6, 1.5, 2.7]
    assert all(s.complete for s in stream.sentences)
    assert round(stream.audio_seconds, 3) == 3.0
    assert stream.spoken_text() == REPLY
    assert stream.text == REPLY


@pytest.mark.timeout(10)
async def test_pipeline_renders_the_next_sentence_while_one_is_consumed() -> None:
    tts = FakeTTS(delay=0.01)
    stream = SpeechStream(deltas(REPLY), tts, lookahead=1)
    got = []
    async for chunk in stream:
        got.append(chunk.index)
        if chunk.index == 0 and len(got) == 2:
            # The consumer is still on sentence 0: sentence 1 is being rendered, not 2.
            await asyncio.sleep(0.1)
            started = [t for kind, t in tts.log if kind == "start"]
            assert started == ["One two.", "Three four five."]
    assert got == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.timeout(10)
async def test_pipeline_cancel_stops_at_once_and_reports_what_was_heard() -> None:
    tts = FakeTTS(delay=0.05)
    closed = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        try:
            yield "One two. Three four five. "
            await asyncio.sleep(3600)  # the LLM is still generating
            yield "never"
        finally:
            closed.set()

    stream = SpeechStream(source(), tts)
    got = []
    async for chunk in stream:
        got.append(chunk)
        if chunk.index == 1:  # barge-in during the second sentence
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await stream.cancel()
            assert loop.time() - t0 < 0.5
    assert stream.cancelled
    assert [c.index for c in got] == [0, 0, 1]
    assert closed.is_set()  # the text source was closed too
    assert ("closed", "Three four five.") in tts.log or ("end", "Three four five.") in tts.log
    # Everything handed out counts as heard by default: sentence 0 and half of 1.
    assert stream.spoken_text() == "One two. Three"
    # The client reports it had played only 0.3 s: one word.
    assert stream.spoken_text(played_seconds=0.3) == "One"
    assert stream.spoken_text(played_seconds=0.0) == ""
    assert [c async for c in stream] == []  # iteration is over


@pytest.mark.timeout(10)
async def test_pipeline_cancel_wakes_a_consumer_waiting_for_text() -> None:
    async def silent() -> AsyncIterator[str]:
        await asyncio.sleep(3600)
        yield ""

    stream = SpeechStream(silent(), FakeTTS())
    consumer = asyncio.create_task(anext(stream, None))
    await asyncio.sleep(0.05)
    await stream.cancel()
    assert await asyncio.wait_for(consumer, 1) is None


@pytest.mark.timeout(10)
async def test_pipeline_raises_tts_errors_after_the_audio_before_them() -> None:
    stream = SpeechStream(deltas("Fine here. Broken there. Never."), FakeTTS(fail_on="Broken"))
    got = []
    with pytest.raises(TTSError):
        async for chunk in stream:
            got.append(chunk.index)
    assert got == [0, 0]
    await stream.aclose()


@pytest.mark.timeout(10)
async def test_pipeline_raises_text_source_errors() -> None:
    async def broken() -> AsyncIterator[str]:
        yield "Hello there. "
        raise RuntimeError("llm died")

    stream = SpeechStream(broken(), FakeTTS())
    with pytest.raises(RuntimeError, match="llm died"):
        async for _ in stream:
            pass


@pytest.mark.timeout(10)
async def test_pipeline_skips_emoji_only_sentences_without_stalling() -> None:
    tts = FakeTTS()
    async with SpeechStream(deltas("Hi there. 🎉🎉. Bye now. 👋"), tts, lookahead=0) as stream:
        indexes = [c.index async for c in stream]
    assert indexes == [0, 0, 2, 2]
    assert [t for kind, t in tts.log if kind == "start"] == ["Hi there.", "Bye now."]
    assert stream.spoken_text() == "Hi there. 🎉🎉. Bye now. 👋"


@pytest.mark.timeout(10)
async def test_pipeline_resamples_to_one_rate() -> None:
    stream = SpeechStream(deltas("One two. Three."), FakeTTS(), sample_rate=24000)
    chunks = [c async for c in stream]
    assert {c.audio.sample_rate for c in chunks} == {24000}
    assert sum(c.audio.duration for c in chunks) == pytest.approx(0.9, abs=0.01)
