"""Spoken replies in MP3 / Ogg Opus: the streaming encoder, output_audio_format, the speaker."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agents.llm.base import GenerationParams
from agents.turns import Turn, TurnResult
from agents.voice import ReplySpeaker, ReplyVoice
from agents.voice_format import (
    PCM16,
    OutputFormat,
    OutputFormatError,
    parse_output_format,
)
from media.audio import (
    AudioChunk,
    AudioFormatError,
    StreamEncoder,
    _ogg_crc,
    codec_available,
    decode,
)
from media.tts.base import TTSProvider, VoiceSettings
from tests.fakes.llm import ScriptedLLM

needs_av = pytest.mark.skipif(
    not (codec_available("mp3") and codec_available("opus")), reason="PyAV is in the voice extra"
)


def tone(seconds: float, rate: int, freq: float = 440.0) -> bytes:
    count = int(seconds * rate)
    return struct.pack(
        f"<{count}h", *(int(8000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(count))
    )


def rms(pcm: bytes) -> float:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def ogg_pages(data: bytes) -> list[bytes]:
    """Split an Ogg stream into pages, checking each page's CRC."""
    pages = []
    pos = 0
    while pos < len(data):
        assert data[pos : pos + 4] == b"OggS", pos
        count = data[pos + 26]
        size = 27 + count + sum(data[pos + 27 : pos + 27 + count])
        page = data[pos : pos + size]
        blank = page[:22] + b"\0\0\0\0" + page[26:]
        assert _ogg_crc(blank) == struct.unpack("<I", page[22:26])[0], "bad page CRC"
        pages.append(page)
        pos += size
    return pages


# -- the streaming encoder ---------------------------------------------------------------


@needs_av
@pytest.mark.parametrize("fmt", ["mp3", "opus"])
def test_stream_pieces_concatenate_to_one_valid_stream(fmt: str) -> None:
    pcm = tone(2.0, 24000)
    encoder = StreamEncoder(fmt, 24000)
    step = 24000 * 2 // 5  # 200 ms
    pieces = [encoder.encode(pcm[i : i + step]) for i in range(0, len(pcm), step)]
    pieces.append(encoder.finish())
    assert sum(1 for p in pieces[:-1] if p) >= 8  # bytes come out as audio goes in
    data = b"".join(pieces)
    back = decode(data, 24000)
    if fmt == "opus":
        # Ogg Opus trims the encoder's delay and padding: the exact length comes back.
        assert back.duration == pytest.approx(2.0, abs=0.001)
        pages = ogg_pages(data)
        assert pages[0][5] == 0x02 and pages[0][28:36] == b"OpusHead"  # begin of stream
        assert pages[1][28:36] == b"OpusTags"
        assert pages[-1][5] == 0x04  # end of stream
        granules = [struct.unpack("<q", p[6:14])[0] for p in pages[2:]]
        assert granules == sorted(granules)
    else:
        assert data[0] == 0xFF and data[1] & 0xE0 == 0xE0  # a bare MPEG audio frame, no ID3
        assert 2.0 <= back.duration < 2.1  # MP3 keeps the encoder's ~50 ms delay
    assert rms(back.data) > 3000  # the tone, not silence
    # Each piece that carries audio is itself decodable after the ones before it.
    assert decode(b"".join(pieces[:5]), 24000).duration > 0.5


@needs_av
def test_stream_encoder_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(AudioFormatError, match="cannot encode 22050"):
        StreamEncoder("opus", 22050)
    with pytest.raises(AudioFormatError, match="no streaming encoder"):
        StreamEncoder("wav", 24000)
    encoder = StreamEncoder("mp3", 24000)
    encoder.encode(tone(0.1, 24000))
    encoder.finish()
    assert encoder.finish() == b""
    with pytest.raises(AudioFormatError):
        encoder.encode(tone(0.1, 24000))


# -- output_audio_format ------------------------------------------------------------------


@needs_av
def test_output_format_parsing() -> None:
    assert parse_output_format(None) == PCM16
    assert parse_output_format("pcm16") == OutputFormat("pcm16", 24000)
    assert parse_output_format("mp3") == OutputFormat("mp3", 24000)
    assert parse_output_format({"type": "opus", "sample_rate": 48000}) == OutputFormat(
        "opus", 48000
    )
    assert parse_output_format({"type": "pcm16", "sample_rate": 16000}).as_dict() == {
        "type": "pcm16",
        "sample_rate": 16000,
        "channels": 1,
    }
    cases: list[tuple[str | dict[str, Any], str]] = [
        ("g711_ulaw", "not supported"),
        ({"type": "flac"}, "not supported"),
        ({"type": "opus", "sample_rate": 22050}, "22050"),
        ({"type": "pcm16", "sample_rate": 12345}, "12345"),
        ({"type": "mp3", "sample_rate": "24000"}, "sample_rate"),
        ({"type": "mp3", "channels": 2}, "mono"),
    ]
    for bad, words in cases:
        with pytest.raises(OutputFormatError, match=words) as info:
            parse_output_format(bad)
        assert info.value.code == "unsupported_audio_format"


def test_compressed_output_without_pyav_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agents.voice_format.codec_available", lambda fmt: False)
    for kind in ("mp3", "opus"):
        with pytest.raises(OutputFormatError, match=r"salon\[voice\]"):
            parse_output_format(kind)
    assert parse_output_format("pcm16") == PCM16  # PCM needs nothing


# -- the speaker in a turn ----------------------------------------------------------------


class ToneTTS(TTSProvider):
    """0.3 s of a 440 Hz tone per word, at 22050 Hz, in two chunks."""

    name = "tone"

    async def synthesize(self, text: str, voice: VoiceSettings) -> AsyncIterator[AudioChunk]:
        pcm = tone(0.3 * len(text.split()), 22050)
        half = len(pcm) // 4 * 2
        for part in (pcm[:half], pcm[half:]):
            await asyncio.sleep(0)
            yield AudioChunk(part, 22050)


async def spoken_turn(
    output: OutputFormat,
    pieces: list[str],
    *,
    cancel_after_audio: int | None = None,
    played: float | None = None,
) -> tuple[list[dict[str, Any]], TurnResult]:
    events: list[dict[str, Any]] = []
    tts = ToneTTS()

    async def get_tts() -> TTSProvider:
        return tts

    turn: Turn

    async def emit(event: dict[str, Any]) -> None:
        events.append(event)
        if event["type"] == "response.text.delta":
            speaker.feed(event["delta"])
        audio = [e for e in events if e["type"] == "response.audio.delta"]
        if cancel_after_audio is not None and len(audio) == cancel_after_audio:
            turn.cancel(played_seconds=played)

    voice = ReplyVoice(get_tts, fallback=lambda: asyncio.sleep(0, None), first_clause_words=0)
    speaker = voice.speaker({}, "resp_1", emit, output)
    turn = Turn(
        ScriptedLLM(pieces, delay=0.01),
        response_id="resp_1",
        messages=[],
        params=GenerationParams(max_tokens=50),
        speech=speaker,
    )

    async def finish(result: TurnResult) -> str:
        return "msg_1"

    result = await asyncio.wait_for(turn.run(emit, finish), 20)
    return events, result


@needs_av
@pytest.mark.parametrize("kind", ["mp3", "opus"])
async def test_a_reply_in_compressed_audio_decodes_as_one_stream(kind: str) -> None:
    fmt = parse_output_format(kind)
    events, result = await spoken_turn(fmt, ["One two three. ", "Four five six seven."])
    audio = [e for e in events if e["type"] == "response.audio.delta"]
    assert audio and all(
        e["format"] == {"type": kind, "sample_rate": 24000, "channels": 1} for e in audio
    )
    data = b"".join(base64.b64decode(e["audio"]) for e in audio)
    done = next(e for e in events if e["type"] == "response.audio.done")
    # Seven words of 0.3 s; audio_ms counts PCM, the stream decodes to the same length.
    assert done["audio_ms"] == pytest.approx(2100, abs=2)
    assert done["chunks"] == len(audio)
    back = decode(data, 24000)
    assert back.duration == pytest.approx(2.1, abs=0.001 if kind == "opus" else 0.1)
    assert rms(back.data) > 3000
    assert len(data) < 2.1 * 24000 * 2 / 5  # compressed: a fraction of the PCM's size
    assert result.status == "complete"


@needs_av
async def test_a_cancelled_compressed_reply_still_stores_what_was_heard() -> None:
    pieces = [f"Word{i} a b c. " for i in range(30)]
    events, result = await spoken_turn(
        parse_output_format("opus"), pieces, cancel_after_audio=12, played=1.5
    )
    assert events[-1]["type"] == "response.cancelled" and events[-1]["audio_flush"] is True
    # 1.5 s of PCM: sentence 0 (1.2 s) and one word of sentence 1, as with PCM16.
    assert result.text == "Word0 a b c. Word1"
    data = b"".join(
        base64.b64decode(e["audio"]) for e in events if e["type"] == "response.audio.delta"
    )
    assert decode(data, 24000).duration > 1.0  # a stream cut short still decodes


@needs_av
async def test_encoding_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: set[str] = set()
    real = StreamEncoder.encode

    def spy(self: StreamEncoder, pcm: bytes) -> bytes:
        threads.add(threading.current_thread().name)
        return real(self, pcm)

    monkeypatch.setattr(StreamEncoder, "encode", spy)
    await spoken_turn(parse_output_format("mp3"), ["One two. "])
    # The reply's pieces go to the encoding pool (ReplyVoice's start-up warm-up
    # may add a to_thread worker); never the event loop's thread.
    assert any(name.startswith("salon-audio-encode") for name in threads)
    assert threading.current_thread().name not in threads


async def test_pcm16_is_the_default_and_unencoded() -> None:
    events, _ = await spoken_turn(PCM16, ["One two. "])
    audio = [e for e in events if e["type"] == "response.audio.delta"]
    assert all(e["format"] == {"type": "pcm16", "sample_rate": 24000, "channels": 1} for e in audio)
    pcm = b"".join(base64.b64decode(e["audio"]) for e in audio)
    assert len(pcm) == 2 * int(0.6 * 24000)


async def test_speaker_at_another_pcm_rate() -> None:
    events, _ = await spoken_turn(parse_output_format({"sample_rate": 16000}), ["One two. "])
    audio = [e for e in events if e["type"] == "response.audio.delta"]
    assert {e["format"]["sample_rate"] for e in audio} == {16000}
    assert sum(len(base64.b64decode(e["audio"])) for e in audio) == pytest.approx(
        2 * 0.6 * 16000, abs=4
    )


def test_reply_speaker_keeps_pcm_accounting_for_played_time() -> None:
    async def tts() -> TTSProvider:
        return ToneTTS()

    speaker = ReplySpeaker(tts, VoiceSettings(), "r", lambda e: asyncio.sleep(0))
    assert speaker.output == PCM16 and speaker.sent_seconds == 0.0
