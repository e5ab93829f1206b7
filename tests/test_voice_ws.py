"""Voice over the WebSocket, end to end: spoken replies, input audio, barge-in, errors.

A real ``salon serve`` speaking with espeak-ng (fast and always there) and
transcribing with the bundled faster-whisper tiny.en, both offline.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from media.audio import codec_available, decode, resample
from media.tts.base import VoiceSettings
from media.tts.espeak import EspeakProvider
from tests.conftest import Client, ServerProcess, connect, server_env
from tests.fakes.openai_server import FakeOpenAI

FORMAT = {"type": "pcm16", "sample_rate": 24000, "channels": 1}
CHUNK_LIMIT = 24000 * 2 * 200 // 1000  # 200 ms of 24 kHz PCM16


@pytest.fixture(scope="module")
def voice_server(
    fake_llm: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("salon-voice")
    env = server_env(data_dir, fake_llm, SALON_TTS_PROVIDER="espeak", SALON_VOICE_PRELOAD="1")
    proc = ServerProcess(data_dir, env).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def speech_16k() -> bytes:
    """ "please tell me a joke", spoken by espeak-ng, as PCM16 mono 16 kHz."""

    async def render() -> bytes:
        tts = EspeakProvider()
        parts = []
        rate = 22050
        async for chunk in tts.synthesize("Please tell me a joke.", VoiceSettings(speed=0.9)):
            parts.append(chunk.data)
            rate = chunk.sample_rate
        return resample(b"".join(parts), rate, 16000)

    return asyncio.run(render())


def _b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


async def _send_audio(c: Client, pcm: bytes, chunk_ms: int = 100) -> None:
    step = 16000 * 2 * chunk_ms // 1000
    for i in range(0, len(pcm), step):
        await c.send({"type": "input_audio.append", "audio": _b64(pcm[i : i + step])})


async def _audio_session(
    server: ServerProcess, **fields: Any
) -> tuple[Client, str, dict[str, Any]]:
    persona = server.create_persona(voice={"provider": "espeak", "voice": "en-us", "speed": 1.2})
    c = await connect(server)
    ready = await c.start(persona["id"], modalities=["text", "audio"], **fields)
    assert ready["type"] == "session.ready", ready
    return c, ready["conversation_id"], persona


def _history(server: ServerProcess, conv: str) -> list[tuple[str, str]]:
    r = httpx.get(f"{server.url}/v1/conversations/{conv}/messages", headers=server.auth)
    return [(m["role"], m["content"]) for m in r.json()["data"]]


async def test_a_spoken_reply_streams_audio_after_its_text(voice_server: ServerProcess) -> None:
    c, _conv, _ = await _audio_session(voice_server)
    await c.send({"type": "message.create", "id": "m1", "text": "hello"})
    done = await c.until("response.done", timeout=20)
    events = [e for e in c.events if e["type"] != "session.ready"]
    kinds = [e["type"] for e in events]
    audio = [e for e in events if e["type"] == "response.audio.delta"]
    assert audio, kinds
    assert kinds.index("response.text.delta") < kinds.index("response.audio.delta")
    last_audio = len(kinds) - 1 - kinds[::-1].index("response.audio.delta")
    assert last_audio < kinds.index("response.audio.done") < kinds.index("response.done")
    pcm = [base64.b64decode(e["audio"]) for e in audio]
    assert all(e["format"] == FORMAT and e["response_id"] == done["response_id"] for e in audio)
    assert all(0 < len(p) <= CHUNK_LIMIT and len(p) % 2 == 0 for p in pcm)
    seconds = sum(len(p) for p in pcm) / 2 / 24000
    assert 0.5 < seconds < 6, seconds  # "Hello from the fake model." spoken once
    finished = next(e for e in events if e["type"] == "response.audio.done")
    assert finished["chunks"] == len(audio) and abs(finished["audio_ms"] - seconds * 1000) < 2
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    await c.close()


async def test_a_text_session_gets_no_audio(voice_server: ServerProcess) -> None:
    persona = voice_server.create_persona()
    c = await connect(voice_server)
    ready = await c.start(persona["id"])
    assert ready["modalities"] == ["text"]
    await c.send({"type": "message.create", "id": "t", "text": "hello"})
    await c.until("response.done")
    assert not [e for e in c.events if e["type"].startswith("response.audio")]
    await c.close()


async def test_resume_replays_the_missed_audio(voice_server: ServerProcess) -> None:
    c, conv, persona = await _audio_session(voice_server, user="phone")
    await c.send({"type": "message.create", "id": "q", "text": "[story] go on"})
    seen: list[dict[str, Any]] = []
    while len([e for e in seen if e["type"] == "response.audio.delta"]) < 2:
        seen.append(await c.recv(timeout=20))
    last = max(e["seq"] for e in seen if e["type"] != "session.ready")
    c.ws.transport.abort()  # the network vanishes mid-reply
    await asyncio.sleep(0.5)  # the reply (and its audio) goes on without us

    c2 = await connect(voice_server)
    ready = await c2.start(
        persona["id"],
        user="phone",
        conversation_id=conv,
        resume_after=last,
        modalities=["text", "audio"],
    )
    assert ready["type"] == "session.ready"
    while len([e for e in c2.events if e["type"] == "response.audio.delta"]) < 5:
        await c2.recv(timeout=20)
    await c2.send({"type": "response.cancel"})
    await c2.until("response.cancelled", timeout=20)
    before = [e for e in seen if e["type"] != "session.ready"]
    after = [e for e in c2.events if e["type"] not in ("session.ready", "error")]
    seqs = [e["seq"] for e in before + after]
    assert seqs == list(range(1, seqs[-1] + 1)), "gap or duplicate across the reconnect"
    assert after[0]["seq"] == last + 1
    assert all(base64.b64decode(e["audio"]) for e in after if e["type"] == "response.audio.delta")
    await c2.close()


@pytest.mark.skipif(not codec_available("opus"), reason="PyAV is in the voice extra")
@pytest.mark.parametrize("kind", ["mp3", "opus"])
async def test_compressed_audio_resumes_into_one_stream(
    voice_server: ServerProcess, kind: str
) -> None:
    c, conv, persona = await _audio_session(
        voice_server, user=f"phone-{kind}", output_audio_format={"type": kind}
    )
    expected = {"type": kind, "sample_rate": 24000, "channels": 1}
    assert c.events[-1]["output_audio_format"] == expected
    await c.send({"type": "message.create", "id": "q", "text": "hello"})
    first = await c.until("response.audio.delta", timeout=20)
    c.ws.transport.abort()  # the network vanishes after the first piece of audio
    await asyncio.sleep(0.5)

    c2 = await connect(voice_server)
    ready = await c2.start(
        persona["id"],
        user=f"phone-{kind}",
        conversation_id=conv,
        resume_after=first["seq"],
        modalities=["text", "audio"],
        output_audio_format=kind,
    )
    assert ready["type"] == "session.ready"
    await c2.until("response.done", timeout=20)
    audio = [first] + [e for e in c2.events if e["type"] == "response.audio.delta"]
    assert all(e["format"] == expected for e in audio) and len(audio) > 1
    done = next(e for e in c2.events if e["type"] == "response.audio.done")
    assert done["chunks"] == len(audio)
    # What came before the drop and what was replayed make one stream of the right length.
    back = decode(b"".join(base64.b64decode(e["audio"]) for e in audio), 24000)
    slack = 0.005 if kind == "opus" else 0.15  # MP3 keeps the encoder's delay and padding
    assert abs(back.duration - done["audio_ms"] / 1000) <= slack, (back.duration, done)
    assert done["audio_ms"] > 500
    await c2.close()


async def test_session_start_refuses_an_output_format_it_cannot_make(
    voice_server: ServerProcess,
) -> None:
    persona = voice_server.create_persona()
    c = await connect(voice_server)
    for fmt, words in [
        ({"type": "flac"}, "flac"),
        ({"type": "opus", "sample_rate": 44100}, "44100"),
    ]:
        err = await c.start(persona["id"], modalities=["text", "audio"], output_audio_format=fmt)
        assert err["type"] == "error" and err["code"] == "unsupported_audio_format", err
        assert words in err["message"]
    await c.send({"type": "message.create", "id": "x", "text": "hi"})
    assert (await c.until("error"))["code"] == "no_session"  # nothing was started
    ready = await c.start(persona["id"], modalities=["text", "audio"])
    assert ready["output_audio_format"] == FORMAT  # PCM16 unless asked
    await c.close()


async def test_barge_in_stores_what_was_heard(voice_server: ServerProcess) -> None:
    c, conv, _ = await _audio_session(voice_server)
    await c.send({"type": "message.create", "id": "s", "text": "[story] tell me"})
    audio_ms = 0.0
    while audio_ms < 3000:  # more than a sentence of audio has been sent
        event = await c.recv(timeout=20)
        if event["type"] == "response.audio.delta":
            audio_ms += len(base64.b64decode(event["audio"])) / 48
    shown = "".join(e["delta"] for e in c.events if e["type"] == "response.text.delta")
    await c.send({"type": "response.cancel", "played_ms": 2500})
    cancelled = await c.until("response.cancelled", timeout=10)
    assert cancelled["audio_flush"] is True
    heard = cancelled["text"]
    assert heard and shown.startswith(heard) and len(heard) < len(shown)
    assert heard.startswith("Sentence 0")
    # 2.5 s of espeak-ng at 1.2x: a sentence or two, far from the 3 s+ already sent.
    assert 2 <= len(heard.split()) <= 12, heard
    await asyncio.sleep(0.2)
    assert _history(voice_server, conv)[-1] == ("assistant", heard)
    await c.close()


async def test_input_audio_is_transcribed_and_answered(
    voice_server: ServerProcess, speech_16k: bytes
) -> None:
    c, conv, _ = await _audio_session(voice_server)
    await _send_audio(c, speech_16k + bytes(16000))  # and half a second of silence
    await c.send({"type": "input_audio.commit", "id": "utt-1"})
    transcript = await c.until("input_audio.transcript", timeout=30)
    assert transcript["id"] == "utt-1" and transcript["auto"] is False
    assert "joke" in transcript["text"].lower(), transcript
    accepted = await c.until("message.accepted")
    assert accepted["id"] == "utt-1" and accepted["text"] == transcript["text"]
    await c.until("response.done", timeout=20)
    assert [e for e in c.events if e["type"] == "response.audio.delta"]
    assert _history(voice_server, conv)[0] == ("user", transcript["text"])
    # The same commit id again is processed once.
    await _send_audio(c, speech_16k)
    await c.send({"type": "input_audio.commit", "id": "utt-1"})
    again = await c.until("message.accepted", timeout=30)
    assert again["duplicate"] is True and again["message_id"] == accepted["message_id"]
    await c.close()


async def test_server_vad_commits_on_trailing_silence(
    voice_server: ServerProcess, speech_16k: bytes
) -> None:
    c, _conv, _ = await _audio_session(voice_server, turn_detection="server_vad")
    assert c.events[-1]["turn_detection"] == "server_vad"
    silence = bytes(16000 * 2)  # one second: more than the 600 ms that ends an utterance
    await _send_audio(c, bytes(8000) + speech_16k + silence, chunk_ms=40)
    await c.until("input_audio.speech_started", timeout=20)
    transcript = await c.until("input_audio.transcript", timeout=30)
    assert transcript["auto"] is True and "joke" in transcript["text"].lower()
    accepted = await c.until("message.accepted")
    assert accepted["id"] == transcript["id"]
    await c.until("response.done", timeout=20)
    await c.close()


async def test_input_audio_errors_lose_nothing(voice_server: ServerProcess) -> None:
    persona = voice_server.create_persona()
    c = await connect(voice_server)
    await c.send({"type": "input_audio.append", "audio": _b64(bytes(320)), "id": "a0"})
    err = await c.until("error")
    assert err["code"] == "no_session" and err["id"] == "a0"
    await c.start(persona["id"], modalities=["text", "audio"])
    cases: list[tuple[dict[str, Any], str]] = [
        ({"audio": "not base64!!"}, "invalid_audio"),
        ({"audio": _b64(b"\x01\x02\x03")}, "invalid_audio"),
        ({"audio": _b64(b"RIFF" + bytes(100))}, "unsupported_audio_format"),
        (
            {"audio": _b64(bytes(320)), "format": {"type": "pcm16", "sample_rate": 8000}},
            "unsupported_audio_format",
        ),
    ]
    for i, (fields, code) in enumerate(cases):
        await c.send({"type": "input_audio.append", "id": f"bad{i}", **fields})
        err = await c.until("error")
        assert (err["code"], err["id"]) == (code, f"bad{i}"), err
    await c.send({"type": "input_audio.commit", "id": "empty"})
    err = await c.until("error")
    assert (err["code"], err["id"]) == ("no_audio", "empty")
    one_second = _b64(bytes(16000 * 2))  # frames are at most 64 KB: ~1.5 s of audio each
    for _ in range(61):  # over the 60 s buffer
        await c.send({"type": "input_audio.append", "audio": one_second})
    err = await c.until("error")
    assert err["code"] == "audio_too_long"
    await c.send({"type": "input_audio.commit", "id": "silence"})
    err = await c.until("error", timeout=30)
    assert err["id"] == "silence" and err["code"] in ("no_speech", "no_audio")
    # The text path is untouched.
    await c.send({"type": "message.create", "id": "ok", "text": "hello"})
    done = await c.until("response.done", timeout=20)
    assert done["text"] == "Hello from the fake model."
    await c.close()


async def test_stt_failure_keeps_the_audio(
    fake_llm: FakeOpenAI, tmp_path: Path, speech_16k: bytes
) -> None:
    env = server_env(
        tmp_path,
        fake_llm,
        SALON_TTS_PROVIDER="espeak",
        SALON_STT_PROVIDER="openai",
        SALON_STT_OPENAI_BASE_URL="http://127.0.0.1:9/v1",  # nothing listens there
        SALON_STT_OPENAI_API_KEY="x",
        SALON_STT_TIMEOUT_SECONDS="2",
    )
    srv = ServerProcess(tmp_path, env).start()
    try:
        persona = srv.create_persona()
        c = await connect(srv)
        await c.start(persona["id"], modalities=["text", "audio"])
        await _send_audio(c, speech_16k)
        for _ in range(2):  # kept after a failure: the same commit retries
            await c.send({"type": "input_audio.commit", "id": "u"})
            err = await c.until("error", timeout=30)
            assert err["id"] == "u" and err["code"].startswith("stt_"), err
        await c.send({"type": "message.create", "id": "t", "text": "hello"})
        await c.until("response.done", timeout=20)
        await c.close()
    finally:
        srv.stop()
