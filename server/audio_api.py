"""OpenAI-compatible audio routes: speech synthesis and transcription (docs/voice.md).

- ``POST /v1/audio/speech``: JSON ``{model, input, voice, response_format, speed}``
  answers with audio. ``pcm`` streams raw PCM16 mono as sentences are
  rendered (24 kHz by default, as OpenAI's; ``sample_rate`` picks another);
  ``wav``, ``mp3`` and ``opus`` are whole files. ``model`` is accepted and
  ignored: the configured TTS provider speaks (``SALON_TTS_PROVIDER``).
- ``POST /v1/audio/transcriptions``: multipart ``file`` (+ ``language``,
  ``prompt``, ``response_format`` json|text|verbose_json) answers ``{"text": ...}``.

Both take a tenant API key or a session token (like every ``/v1`` route),
count against a per-tenant rate limit, and answer errors in OpenAI's shape.
Providers are built on first use from :class:`~media.voice_config.VoiceConfig`
and kept on the app (:func:`voice_services`); the WebSocket voice path can
share them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from agents.speech import SpeechStream
from media.audio import MIME_TYPES, AudioFormatError, codec_available, decode, encode, resample
from media.stt.base import STTError, STTProvider
from media.stt.registry import create_stt
from media.tts.base import TTSError, TTSProvider, VoiceSettings
from media.tts.registry import create_tts
from media.voice_config import VoiceConfig
from server.http_util import (
    HTTPError,
    json_body,
    parse_multipart,
    read_limited,
    require_principal,
    state_of,
)

MAX_SPEECH_BODY = 256 * 1024
PCM_DEFAULT_RATE = 24000  # what OpenAI's response_format=pcm carries
ERROR_STATUS = {
    "tts_unavailable": 503,
    "stt_unavailable": 503,
    "tts_bad_request": 400,
    "stt_bad_request": 400,
    "tts_timeout": 504,
    "stt_timeout": 504,
    # A cloned voice that cannot speak (agents/voice_catalog.py, VoiceUnavailable).
    "voice_not_found": 404,
    "voice_revoked": 410,
    "voice_not_ready": 409,
    "voice_provider_mismatch": 400,
}


class VoiceServices:
    """The app's TTS and STT providers, built and started once, on first use."""

    def __init__(
        self,
        config: VoiceConfig | None = None,
        *,
        tts: TTSProvider | None = None,
        stt: STTProvider | None = None,
    ) -> None:
        self.config = config or VoiceConfig()
        self._tts = tts
        self._stt = stt
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Build and start both providers now if ``SALON_VOICE_PRELOAD`` is set.

        Otherwise they load on first use (a first request then waits for the
        model: ~1 s for Piper, ~1-2 s for Whisper tiny on 2 cores).
        """
        if self.config.voice_preload:
            await self.tts()
            await self.stt()

    async def tts(self) -> TTSProvider:
        if self._tts is None:
            async with self._lock:
                if self._tts is None:
                    provider = create_tts(self.config)
                    await provider.start()
                    self._tts = provider
        return self._tts

    async def stt(self) -> STTProvider:
        if self._stt is None:
            async with self._lock:
                if self._stt is None:
                    provider = create_stt(self.config)
                    await provider.start()
                    self._stt = provider
        return self._stt

    async def close(self) -> None:
        for provider in (self._tts, self._stt):
            if provider is not None:
                await provider.close()
        self._tts = self._stt = None


def voice_services(app: Any) -> VoiceServices:
    """The app's :class:`VoiceServices` (created on first call)."""
    services = getattr(app.state, "salon_voice", None)
    if services is None:
        services = VoiceServices()
        app.state.salon_voice = services
    return services


async def close_voice(app: Any) -> None:
    """Release the voice providers (for the app's shutdown)."""
    services = getattr(app.state, "salon_voice", None)
    if services is not None:
        await services.close()


def _error(status: int, message: str, code: str, type_: str = "invalid_request_error") -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="salon"'} if status == 401 else None
    body = {"error": {"message": message, "type": type_, "code": code, "param": None}}
    return JSONResponse(body, status, headers=headers)


def _from_http(exc: HTTPError) -> Response:
    kind = "authentication_error" if exc.status == 401 else "invalid_request_error"
    if exc.status == 429:
        kind = "rate_limit_error"
    return _error(exc.status, exc.message, exc.code, kind)


def _from_provider(exc: TTSError | STTError) -> Response:
    status = ERROR_STATUS.get(exc.code, 502)
    return _error(
        status, str(exc), exc.code, "server_error" if status >= 500 else "invalid_request_error"
    )


async def _admit(request: Request, config: VoiceConfig) -> str:
    """Authenticate and count the request; returns the tenant id."""
    principal = await require_principal(request)
    state = state_of(request)
    key = f"voice-rate:{principal.tenant_id}"
    if not await state.hot.hit(key, config.voice_requests_per_minute, 60):
        raise HTTPError(429, "rate_limited", "too many audio requests; try again later")
    return principal.tenant_id


# -- speech ----------------------------------------------------------------------


def _speech_request(
    body: dict[str, Any], config: VoiceConfig
) -> tuple[str, VoiceSettings, str, int | None]:
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise HTTPError(400, "invalid_request", "'input' (the text to speak) is required")
    if len(text) > config.voice_max_speech_chars:
        raise HTTPError(
            400,
            "input_too_long",
            f"'input' is longer than {config.voice_max_speech_chars} characters",
        )
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise HTTPError(400, "invalid_request", "'model' must be a string")
    voice = body.get("voice")
    if isinstance(voice, dict):  # newer OpenAI clients send {"id": ...} for custom voices
        voice = voice.get("id")
    if voice is not None and (not isinstance(voice, str) or len(voice) > 200):
        raise HTTPError(400, "invalid_request", "'voice' must be a string")
    default_fmt = "mp3" if codec_available("mp3") else "wav"
    fmt = body.get("response_format") or default_fmt
    if fmt not in MIME_TYPES:
        raise HTTPError(
            400,
            "unsupported_format",
            f"'response_format' must be one of {', '.join(MIME_TYPES)} (got {fmt!r})",
        )
    if not codec_available(fmt):
        raise HTTPError(
            400, "unsupported_format", f"{fmt} output needs PyAV: pip install 'salon[voice]'"
        )
    speed = body.get("speed", 1.0)
    if not isinstance(speed, int | float) or isinstance(speed, bool) or not 0.25 <= speed <= 4.0:
        raise HTTPError(400, "invalid_request", "'speed' must be a number in 0.25..4.0")
    rate = body.get("sample_rate")
    if rate is not None and (not isinstance(rate, int) or not 8000 <= rate <= 48000):
        raise HTTPError(400, "invalid_request", "'sample_rate' must be an integer in 8000..48000")
    language = body.get("language")
    if language is not None and not isinstance(language, str):
        raise HTTPError(400, "invalid_request", "'language' must be a string")
    settings = VoiceSettings(voice=voice or None, language=language, speed=float(speed))
    return text, settings, fmt, rate


async def _once(text: str) -> AsyncIterator[str]:
    yield text


async def speech(request: Request) -> Response:
    services = voice_services(request.app)
    config = services.config
    try:
        tenant_id = await _admit(request, config)
        body = await json_body(request, MAX_SPEECH_BODY)
        text, voice, fmt, rate = _speech_request(body, config)
        tts = await services.tts()
        # A cloned voice's id (voice_...) speaks as the provider's voice, unless revoked.
        from server.voices_api import voice_catalog

        voice = await voice_catalog(request.app).resolve(tenant_id, voice, tts.name)
    except HTTPError as exc:
        return _from_http(exc)
    except TTSError as exc:
        return _from_provider(exc)
    # Sentence by sentence, one rendered ahead: long inputs start streaming
    # after the first sentence and never hold a whole page in one engine call.
    stream = SpeechStream(_once(text), tts, voice)
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        await stream.aclose()
        return _error(400, "nothing in 'input' can be spoken", "invalid_request")
    except (TTSError, STTError) as exc:
        await stream.aclose()
        return _from_provider(exc)
    native = first.audio.sample_rate
    out_rate = rate or (PCM_DEFAULT_RATE if fmt == "pcm" else native)
    headers = {"X-Sample-Rate": str(out_rate), "Cache-Control": "no-store"}

    if fmt == "pcm":

        async def pcm() -> AsyncIterator[bytes]:
            try:
                yield resample(first.audio.data, first.audio.sample_rate, out_rate)
                async for chunk in stream:
                    yield resample(chunk.audio.data, chunk.audio.sample_rate, out_rate)
            finally:
                await stream.aclose()

        return StreamingResponse(pcm(), media_type=MIME_TYPES["pcm"], headers=headers)

    parts = [first.audio.data]
    try:
        async for chunk in stream:
            parts.append(resample(chunk.audio.data, chunk.audio.sample_rate, native))
    except TTSError as exc:
        return _from_provider(exc)
    finally:
        await stream.aclose()
    pcm_all = resample(b"".join(parts), native, out_rate)
    try:
        data = await asyncio.to_thread(encode, pcm_all, out_rate, fmt)
    except AudioFormatError as exc:
        return _error(500, str(exc), "encode_failed", "server_error")
    return Response(data, media_type=MIME_TYPES[fmt], headers=headers)


# -- transcription ---------------------------------------------------------------


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 2000:
        raise HTTPError(400, "invalid_request", f"'{name}' must be a short text field")
    return value


async def transcriptions(request: Request) -> Response:
    services = voice_services(request.app)
    config = services.config
    try:
        await _admit(request, config)
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise HTTPError(400, "invalid_request", "send the audio as multipart/form-data 'file'")
        body = await read_limited(request, config.voice_max_upload_bytes + 64 * 1024)
        form = await parse_multipart(request, body)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPError(400, "invalid_request", "'file' (the audio to transcribe) is required")
        data = await upload.read()
        if len(data) > config.voice_max_upload_bytes:
            raise HTTPError(
                413, "file_too_large", f"the upload exceeds {config.voice_max_upload_bytes} bytes"
            )
        if not data:
            raise HTTPError(400, "invalid_request", "'file' is empty")
        language = _field(form, "language")
        prompt = _field(form, "prompt")
        fmt = _field(form, "response_format") or "json"
        if fmt not in ("json", "text", "verbose_json"):
            raise HTTPError(
                400, "unsupported_format", "'response_format' must be json, text or verbose_json"
            )
        try:
            audio = await asyncio.to_thread(decode, data, 16000)
        except AudioFormatError as exc:
            raise HTTPError(400, "invalid_audio", str(exc)) from exc
        stt = await services.stt()
        result = await stt.transcribe(audio, language=language, prompt=prompt)
    except HTTPError as exc:
        return _from_http(exc)
    except STTError as exc:
        return _from_provider(exc)
    if fmt == "text":
        return PlainTextResponse(result.text)
    if fmt == "verbose_json":
        return JSONResponse(
            {
                "task": "transcribe",
                "language": result.language,
                "duration": round(result.duration, 3),
                "text": result.text,
                "segments": [
                    {"id": i, "start": s.start, "end": s.end, "text": s.text}
                    for i, s in enumerate(result.segments)
                ],
            }
        )
    return JSONResponse({"text": result.text})


routes: list[BaseRoute] = [
    Route("/v1/audio/speech", speech, methods=["POST"]),
    Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
]
