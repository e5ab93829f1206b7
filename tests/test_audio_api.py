"""POST /v1/audio/speech and /v1/audio/transcriptions on a real `salon serve`, via the openai SDK."""

from __future__ import annotations

import importlib.util
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from media.audio import codec_available, read_wav, wav_bytes
from tests.conftest import ServerProcess, server_env
from tests.fakes.openai_server import FakeOpenAIAudio

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is installed by scripts/test"
)


@pytest.fixture(scope="module")
def fake_audio() -> Iterator[FakeOpenAIAudio]:
    server = FakeOpenAIAudio().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def voice_server(
    fake_audio: FakeOpenAIAudio, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """espeak-ng speaks; transcription goes to the fake OpenAI endpoint."""
    data_dir = tmp_path_factory.mktemp("salon-voice")
    env = server_env(
        data_dir,
        fake_audio,
        SALON_TTS_PROVIDER="espeak",
        SALON_STT_PROVIDER="openai",
        SALON_STT_OPENAI_BASE_URL=fake_audio.base_url,
        SALON_STT_OPENAI_API_KEY="fake-key",
        SALON_VOICE_MAX_UPLOAD_BYTES="200000",
        SALON_VOICE_MAX_SPEECH_CHARS="500",
        SALON_VOICE_REQUESTS_PER_MINUTE="1000",
    )
    proc = ServerProcess(data_dir, env).start()
    yield proc
    proc.stop()


@pytest.fixture
async def client(voice_server: ServerProcess) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(
        base_url=voice_server.url + "/v1", api_key=voice_server.key, max_retries=0, timeout=30
    )
    yield c
    await c.close()


def post(server: ServerProcess, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(server.url + path, headers=server.auth, timeout=30, **kwargs)  # type: ignore[arg-type]


# -- speech -------------------------------------------------------------------------------


async def test_speech_wav_through_the_openai_sdk(client: openai.AsyncOpenAI) -> None:
    response = await client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello from Salon. How are you?", response_format="wav"
    )
    audio = read_wav(response.content)
    assert audio.sample_rate == 22050  # espeak-ng's native rate
    assert 1.0 < audio.duration < 6


def test_speech_pcm_streams_at_the_openai_rate(voice_server: ServerProcess) -> None:
    body = {
        "model": "tts-1",
        "input": "One. Two. Three.",
        "voice": "alloy",
        "response_format": "pcm",
    }
    with httpx.stream(
        "POST", voice_server.url + "/v1/audio/speech", json=body, headers=voice_server.auth
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "audio/pcm"
        assert r.headers["x-sample-rate"] == "24000"
        data = b"".join(r.iter_bytes())
    assert len(data) % 2 == 0 and 1.0 < len(data) / 2 / 24000 < 6
    r = post(voice_server, "/v1/audio/speech", json={**body, "sample_rate": 16000})
    assert r.headers["x-sample-rate"] == "16000"
    assert abs(len(r.content) / 2 / 16000 - len(data) / 2 / 24000) < 0.05


def test_speech_speed_and_voice(voice_server: ServerProcess) -> None:
    body = {"input": "one two three four five six seven", "response_format": "wav"}
    normal = read_wav(post(voice_server, "/v1/audio/speech", json=body).content)
    fast = read_wav(post(voice_server, "/v1/audio/speech", json={**body, "speed": 2.0}).content)
    assert fast.duration < normal.duration * 0.75
    german = post(voice_server, "/v1/audio/speech", json={**body, "voice": "de"})
    assert german.status_code == 200


@pytest.mark.skipif(not codec_available("mp3"), reason="PyAV (voice extra) not installed")
def test_speech_compressed_formats(voice_server: ServerProcess) -> None:
    mp3 = post(voice_server, "/v1/audio/speech", json={"input": "Hello there."})
    assert mp3.status_code == 200 and mp3.headers["content-type"] == "audio/mpeg"  # the default
    opus = post(voice_server, "/v1/audio/speech", json={"input": "Hi.", "response_format": "opus"})
    assert opus.status_code == 200 and opus.content[:4] == b"OggS"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"input": ""}, 400, "invalid_request"),
        ({"input": "x" * 501}, 400, "input_too_long"),
        ({"input": "hi", "response_format": "flac"}, 400, "unsupported_format"),
        ({"input": "hi", "speed": 10}, 400, "invalid_request"),
        ({"input": "hi", "voice": 5}, 400, "invalid_request"),
        ({"input": "hi", "voice": "bogusvoice"}, 400, "tts_bad_request"),
        ({"input": "🎉🎉"}, 400, "invalid_request"),
    ],
)
def test_speech_errors(
    voice_server: ServerProcess, body: dict[str, object], status: int, code: str
) -> None:
    r = post(voice_server, "/v1/audio/speech", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]


def test_audio_routes_need_auth(voice_server: ServerProcess) -> None:
    r = httpx.post(voice_server.url + "/v1/audio/speech", json={"input": "hi"}, timeout=10)
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(
        voice_server.url + "/v1/audio/transcriptions",
        files={"file": ("a.wav", b"RIFF")},
        headers={"Authorization": "Bearer nope"},
        timeout=10,
    )
    assert r.status_code == 401


# -- transcription ----------------------------------------------------------------------------


def tone_wav(seconds: float = 0.5, rate: int = 8000) -> bytes:
    return wav_bytes(b"\x00\x10" * int(seconds * rate), rate)


async def test_transcription_through_the_openai_sdk(
    client: openai.AsyncOpenAI, fake_audio: FakeOpenAIAudio
) -> None:
    result = await client.audio.transcriptions.create(
        model="whisper-1", file=("hello.wav", tone_wav(), "audio/wav"), language="en"
    )
    assert result.text == "hello from the fake transcriber"
    sent = fake_audio.transcription_requests[-1]
    # Salon decoded the 8 kHz upload and handed the provider 16 kHz audio.
    assert sent["head"] == b"RIFF" and sent["size"] == 44 + 2 * 8000
    assert sent["language"] == "en"
    text = await client.audio.transcriptions.create(
        model="whisper-1", file=("hello.wav", tone_wav()), response_format="text"
    )
    assert str(text).strip() == "hello from the fake transcriber"


def test_transcription_verbose_json(voice_server: ServerProcess) -> None:
    r = post(
        voice_server,
        "/v1/audio/transcriptions",
        files={"file": ("a.wav", tone_wav())},
        data={"response_format": "verbose_json"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "transcribe" and body["text"] == "hello from the fake transcriber"
    assert body["duration"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    ("files", "data", "status", "code"),
    [
        ({"file": ("big.wav", b"RIFF" + b"\0" * 300_000)}, {}, 413, "file_too_large"),
        ({"file": ("notes.txt", b"this is not audio at all")}, {}, 400, "invalid_audio"),
        ({"file": ("empty.wav", b"")}, {}, 400, "invalid_request"),
        ({}, {"model": "whisper-1"}, 400, "invalid_request"),
        ({"file": ("a.wav", b"RIFF")}, {"response_format": "srt"}, 400, "unsupported_format"),
    ],
)
def test_transcription_errors(
    voice_server: ServerProcess,
    files: dict[str, tuple[str, bytes]],
    data: dict[str, str],
    status: int,
    code: str,
) -> None:
    r = post(voice_server, "/v1/audio/transcriptions", files=files or None, data=data)
    if not files:  # a form without a file part is still multipart for this check
        r = post(
            voice_server,
            "/v1/audio/transcriptions",
            files={"note": (None, "x")},  # type: ignore[dict-item]
            data=data,
        )
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_transcription_needs_multipart(voice_server: ServerProcess) -> None:
    r = post(voice_server, "/v1/audio/transcriptions", json={"file": "x"})
    assert r.status_code == 400


# -- the embedded default, end to end: Piper/espeak speaks, Whisper listens ----------------


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("faster_whisper") is None,
    reason="faster-whisper is in the voice extra",
)
async def test_default_voice_round_trip(fake_audio: FakeOpenAIAudio, tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, server_env(tmp_path, fake_audio)).start()
    try:
        async with openai.AsyncOpenAI(
            base_url=proc.url + "/v1", api_key=proc.key, max_retries=0, timeout=60
        ) as c:
            said = "Please open the window, it is warm in here."
            speech = await c.audio.speech.create(
                model="tts-1", voice="alloy", input=said, response_format="wav"
            )
            heard = await c.audio.transcriptions.create(
                model="whisper-1", file=("speech.wav", speech.content)
            )
    finally:
        proc.stop()
    expected = re.findall(r"[a-z]+", said.lower())
    got = re.findall(r"[a-z]+", heard.text.lower())
    assert sum(w in got for w in expected) / len(expected) >= 0.75, heard.text
