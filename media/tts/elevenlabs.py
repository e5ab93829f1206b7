"""ElevenLabs streaming TTS over its HTTP API.

``POST {base_url}/v1/text-to-speech/{voice_id}/stream?output_format=pcm_<rate>``
with the ``xi-api-key`` header answers with raw PCM16 mono audio as it is
rendered. We call it with httpx (already a core dependency) rather than the
official ``elevenlabs`` SDK: the streaming endpoint is a single POST whose
body is the audio itself, the SDK would add a large pydantic-generated
package to the install for it, and a plain client keeps ``base_url``
pointing anywhere (a proxy, the EU endpoint, the test fake).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from media.audio import SAMPLE_WIDTH, AudioChunk
from media.tts.base import (
    OPENAI_VOICES,
    TTSCapabilities,
    TTSError,
    TTSProvider,
    VoiceSettings,
    primary_language,
)

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_MODEL = "eleven_flash_v2_5"
DEFAULT_VOICE_ID = "21m00Tcm4TlvDq8ikWAM"  # "Rachel", one of the premade voices
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
# Emotion -> voice_settings. Lower stability lets the voice vary more (more
# expressive), style exaggerates the speaker's delivery; similarity_boost is
# ElevenLabs' default, sent because voice_settings replaces the stored ones.
EMOTION_SETTINGS: dict[str, dict[str, float]] = {
    "cheerful": {"stability": 0.4, "similarity_boost": 0.75, "style": 0.35},
    "excited": {"stability": 0.3, "similarity_boost": 0.75, "style": 0.6},
    "sad": {"stability": 0.6, "similarity_boost": 0.75, "style": 0.3},
    "angry": {"stability": 0.3, "similarity_boost": 0.75, "style": 0.7},
}
# Only these models take language_code; the others refuse it (and detect the
# language by themselves).
LANGUAGE_CODE_MODELS = ("eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_v3")


class ElevenLabsProvider(TTSProvider):
    """Speech from ElevenLabs; ``voice.voice`` is an ElevenLabs voice id."""

    name = "elevenlabs"

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        model: str | None = None,
        default_voice: str | None = None,
        sample_rate: int = 24000,
        timeout: float = 30.0,
    ) -> None:
        if not api_key:
            raise TTSError(
                "the ElevenLabs TTS provider needs an API key: set SALON_TTS_ELEVENLABS_API_KEY",
                code="tts_unavailable",
            )
        if sample_rate not in PCM_RATES:
            raise ValueError(f"ElevenLabs PCM sample rate must be one of {PCM_RATES}")
        self.model = model or DEFAULT_MODEL
        self.default_voice = default_voice or DEFAULT_VOICE_ID
        self.sample_rate = sample_rate
        self.capabilities = TTSCapabilities(
            streaming=True,
            languages=("*",),  # multilingual models; language_code steers them
            cloning=True,  # cloned voices are used by their voice id
            emotion=True,  # as voice_settings (EMOTION_SETTINGS)
            sample_rates=PCM_RATES,
            output_formats=("pcm", "wav"),
        )
        self._client = httpx.AsyncClient(
            base_url=(base_url or DEFAULT_BASE_URL).rstrip("/"),
            headers={"xi-api-key": api_key},
            timeout=httpx.Timeout(timeout, connect=5.0),
        )

    async def close(self) -> None:
        await self._client.aclose()

    def _body(self, text: str, voice: VoiceSettings) -> dict[str, Any]:
        body: dict[str, Any] = {"text": text, "model_id": self.model}
        # The emotion's settings first: explicit voice_settings (the persona's) win.
        settings: dict[str, Any] = dict(EMOTION_SETTINGS.get((voice.emotion or "").lower(), {}))
        settings.update(voice.extra.get("voice_settings") or {})
        if voice.speed != 1.0:
            # ElevenLabs accepts 0.7..1.2; clamp rather than fail a reply.
            settings["speed"] = min(max(voice.speed, 0.7), 1.2)
        if settings:
            body["voice_settings"] = settings
        if voice.language and self.model.startswith(LANGUAGE_CODE_MODELS):
            body["language_code"] = primary_language(voice.language)
        return body

    async def synthesize(self, text: str, voice: VoiceSettings) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        voice_id = voice.voice if voice.voice and voice.voice not in OPENAI_VOICES else None
        path = f"/v1/text-to-speech/{voice_id or self.default_voice}/stream"
        request = self._client.build_request(
            "POST",
            path,
            params={"output_format": f"pcm_{self.sample_rate}"},
            json=self._body(text, voice),
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise TTSError("ElevenLabs did not answer in time", code="tts_timeout") from exc
        except httpx.TransportError as exc:
            raise TTSError("could not reach ElevenLabs", code="tts_unavailable") from exc
        try:
            if response.status_code != 200:
                await response.aread()
                raise _status_error(response)
            carry = b""  # an odd byte split across two network chunks
            async for data in response.aiter_bytes():
                data = carry + data
                whole = len(data) - len(data) % SAMPLE_WIDTH
                carry = data[whole:]
                if whole:
                    yield AudioChunk(data[:whole], self.sample_rate)
        except httpx.TimeoutException as exc:
            raise TTSError("ElevenLabs stalled mid-stream", code="tts_timeout") from exc
        except httpx.TransportError as exc:
            raise TTSError("the ElevenLabs stream was cut", code="tts_error") from exc
        finally:
            # Also on cancel: closing the response aborts the request.
            with contextlib.suppress(Exception):
                await asyncio.shield(response.aclose())


def _status_error(response: httpx.Response) -> TTSError:
    detail = ""
    with contextlib.suppress(ValueError):
        body = response.json()
        raw = body.get("detail") if isinstance(body, dict) else None
        if isinstance(raw, dict):
            detail = str(raw.get("message") or raw.get("status") or "")
        elif isinstance(raw, list) and raw and isinstance(raw[0], dict):
            detail = str(raw[0].get("msg", ""))
        elif raw:
            detail = str(raw)
    status = response.status_code
    code = {401: "tts_unavailable", 403: "tts_unavailable", 404: "tts_bad_request"}.get(
        status, "tts_bad_request" if status in (400, 422) else "tts_error"
    )
    message = f"ElevenLabs answered HTTP {status}"
    if status == 401:
        message += " (check SALON_TTS_ELEVENLABS_API_KEY)"
    return TTSError(f"{message}: {detail}" if detail else message, code=code)
