"""Voice over the WebSocket, socket-free: the turn engine with a ReplySpeaker, input checks."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from agents.llm.base import GenerationParams
from agents.turns import Turn, TurnResult
from agents.voice import (
    AudioInput,
    AudioInputError,
    ReplySpeaker,
    check_input_format,
    decode_pcm16,
    persona_voice,
    persona_voice_provider,
)
from media.tts.base import TTSProvider, VoiceSettings
from tests.fakes.llm import ScriptedLLM
from tests.test_speech import FakeTTS


async def _run_turn(
    pieces: list[str],
    *,
    delay: float = 0.0,
    tts: TTSProvider | None = None,
    cancel_after_audio: int | None = None,
    played: float | None = None,
) -> tuple[list[dict[str, Any]], TurnResult, ReplySpeaker]:
    events: list[dict[str, Any]] = []
    provider = tts or FakeTTS()

    async def get_tts() -> TTSProvider:
        return provider

    turn: Turn

    async def emit(event: dict[str, Any]) -> None:
        events.append(event)
        if event["type"] == "response.text.delta":
            speaker.feed(event["delta"])
        audio = [e for e in events if e["type"] == "response.audio.delta"]
        if cancel_after_audio is not None and len(audio) == cancel_after_audio:
            turn.cancel(played_seconds=played)

    speaker = ReplySpeaker(get_tts, VoiceSettings(), "resp_1", emit)
    turn = Turn(
        ScriptedLLM(pieces, delay=delay),
        response_id="resp_1",
        messages=[],
        params=GenerationParams(max_tokens=50),
        speech=speaker,
    )

    async def finish(result: TurnResult) -> str:
        return "msg_1"

    result = await asyncio.wait_for(turn.run(emit, finish), 10)
    return events, result, speaker


async def test_audio_follows_its_text_and_ends_before_done() -> None:
    events, result, _ = await _run_turn(["One two. ", "Three four five."])
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and kinds[-2:] == ["response.audio.done", "response.done"]
    assert kinds.index("response.text.delta") < kinds.index("response.audio.delta")
    audio = [base64.b64decode(e["audio"]) for e in events if e["type"] == "response.audio.delta"]
    assert all(0 < len(a) <= 9600 for a in audio)
    # 5 words x 0.3 s, resampled to 24 kHz
    assert abs(sum(len(a) for a in audio) / 48000 - 1.5) < 0.01
    assert events[-2]["chunks"] == len(audio) and result.status == "complete"
    assert events[-1]["text"] == "One two. Three four five." and "audio_flush" not in events[-1]


async def test_cancel_with_a_position_stores_what_was_heard() -> None:
    pieces = [f"Word{i} a b c. " for i in range(30)]  # 4 words, 1.2 s of audio each
    events, result, _ = await _run_turn(pieces, delay=0.01, cancel_after_audio=12, played=1.5)
    final = events[-1]
    assert final["type"] == "response.cancelled" and final["audio_flush"] is True
    assert result.status == "cancelled"
    assert result.text == final["text"] == "Word0 a b c. Word1"
    assert "response.audio.done" not in [e["type"] for e in events]


async def test_a_tts_failure_keeps_the_text_reply() -> None:
    events, result, _ = await _run_turn(["Fine here. ", "Boom now."], tts=FakeTTS(fail_on="Boom"))
    done = events[-2]
    assert done["type"] == "response.audio.done" and done["error"]["code"] == "tts_error"
    assert result.status == "complete" and result.text == "Fine here. Boom now."


def test_persona_voice_from_persona_json_and_card_extension() -> None:
    default = VoiceSettings(voice="en-us", language="en")
    assert persona_voice({}, default) == default
    assert persona_voice({"voice": "de"}, default).voice == "de"
    v = persona_voice(
        {"voice": {"provider": "espeak", "voice": "fr", "language": "fr", "speed": 1.3}}, default
    )
    assert (v.voice, v.language, v.speed) == ("fr", "fr", 1.3)
    card = {"extensions": {"salon": {"voice": {"id": "nova", "speed": "fast"}}}}
    v = persona_voice(card, default)
    assert (v.voice, v.speed) == ("nova", 1.0)
    assert persona_voice_provider({"voice": {"provider": "ElevenLabs"}}) == "elevenlabs"
    speaker = ReplySpeaker(
        FakeTTS,  # type: ignore[arg-type]  # never called: only voice_for is
        v,
        "r",
        lambda e: asyncio.sleep(0),
        provider="elevenlabs",
        default=default,
    )
    assert speaker.voice_for("espeak").voice == "en-us"
    assert speaker.voice_for("elevenlabs").voice == "nova"


def test_input_audio_checks() -> None:
    assert decode_pcm16(base64.b64encode(b"\x00\x01" * 4).decode()) == b"\x00\x01" * 4
    for bad, code in [
        ("%%%", "invalid_audio"),
        (base64.b64encode(b"abc").decode(), "invalid_audio"),
        (base64.b64encode(b"RIFF" + bytes(40)).decode(), "unsupported_audio_format"),
    ]:
        with pytest.raises(AudioInputError) as info:
            decode_pcm16(bad)
        assert info.value.code == code
    check_input_format(None)
    check_input_format("pcm16")
    check_input_format({"type": "pcm16", "sample_rate": 16000, "channels": 1})
    for fmt in ("opus", {"sample_rate": 48000}, {"channels": 2}):
        with pytest.raises(AudioInputError):
            check_input_format(fmt)


async def test_input_buffer_is_bounded_and_restorable() -> None:
    audio = AudioInput(max_seconds=1.0)
    await audio.append(bytes(16000))
    with pytest.raises(AudioInputError) as info:
        await audio.append(bytes(20000))
    assert info.value.code == "audio_too_long" and audio.commit() is None
    await audio.append(bytes(3200))
    chunk = audio.commit()
    assert chunk is not None and chunk.duration == pytest.approx(0.1)
    audio.restore(chunk)
    assert audio.buffered_seconds == pytest.approx(0.1)
