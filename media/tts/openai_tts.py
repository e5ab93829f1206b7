"""OpenAI TTS (or any server with an OpenAI-compatible ``/v1/audio/speech``).

Uses the official ``openai`` SDK (a core dependency, as for the LLM) with
``with_streaming_response`` and ``response_format="pcm"``: raw PCM16 mono at
24 kHz, forwarded as the bytes arrive. ``instructions`` (how to say it) is
sent for the emotion of :class:`VoiceSettings` on models that take it (not
``tts-1``/``tts-1-hd``). The API has no language parameter: the voices speak
the language of the text.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai

from media.audio import SAMPLE_WIDTH, AudioChunk
from media.tts.base import TTSCapabilities, TTSError, TTSProvider, VoiceSettings

PCM_RATE = 24000  # fixed by the API for response_format=pcm
DEFAULT_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "alloy"
# Salon's emotions (media.tts.base.EMOTIONS) as instructions; any other
# emotion a persona names is passed on in a generic sentence.
EMOTION_INSTRUCTIONS = {
    "cheerful": "Speak in a cheerful, warm tone.",
    "excited": "Speak with excitement and energy.",
    "sad": "Speak softly, in a sad, subdued tone.",
    "angry": "Speak in an angry, tense tone.",
}


class OpenAITTSProvider(TTSProvider):
    """Speech from OpenAI's ``audio.speech`` endpoint; ``voice.voice`` is a voice name."""

    name = "openai"

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        model: str | None = None,
        default_voice: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not api_key and not base_url:
            raise TTSError(
                "the OpenAI TTS provider needs an API key: set SALON_TTS_OPENAI_API_KEY "
                "(or SALON_TTS_OPENAI_BASE_URL for a compatible server that needs none)",
                code="tts_unavailable",
            )
        self.model = model or DEFAULT_MODEL
        self.default_voice = default_voice or DEFAULT_VOICE
        self.capabilities = TTSCapabilities(
            streaming=True,
            languages=("*",),
            # Through ``instructions``, which tts-1 and tts-1-hd do not take.
            emotion=not self.model.startswith("tts-1"),
            output_formats=("pcm", "wav"),
        )
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "not-needed",
            base_url=base_url,
            timeout=openai.Timeout(timeout, connect=5.0),
            max_retries=1,
        )

    async def close(self) -> None:
        await self._client.close()

    async def synthesize(self, text: str, voice: VoiceSettings) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        request: dict[str, Any] = {
            "model": self.model,
            "voice": voice.voice or self.default_voice,
            "input": text,
            "response_format": "pcm",
        }
        if voice.speed != 1.0:
            request["speed"] = min(max(voice.speed, 0.25), 4.0)
        if self.capabilities.emotion and voice.emotion and voice.emotion.lower() != "neutral":
            request["instructions"] = EMOTION_INSTRUCTIONS.get(
                voice.emotion.lower(), f"Speak with a {voice.emotion} tone."
            )
        try:
            async with self._client.audio.speech.with_streaming_response.create(
                **request
            ) as response:
                carry = b""
                async for data in response.iter_bytes():
                    data = carry + data
                    whole = len(data) - len(data) % SAMPLE_WIDTH
                    carry = data[whole:]
                    if whole:
                        yield AudioChunk(data[:whole], PCM_RATE)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise _translate(exc) from exc


def _translate(exc: Exception) -> TTSError:
    if isinstance(exc, TTSError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return TTSError("the OpenAI speech endpoint did not answer in time", code="tts_timeout")
    if isinstance(exc, openai.AuthenticationError):
        return TTSError(
            "the OpenAI speech endpoint refused the key (check SALON_TTS_OPENAI_API_KEY)",
            code="tts_unavailable",
        )
    if isinstance(exc, openai.APIStatusError):
        code = "tts_bad_request" if exc.status_code in (400, 404, 422) else "tts_error"
        return TTSError(f"the OpenAI speech endpoint answered HTTP {exc.status_code}", code=code)
    if isinstance(exc, openai.APIConnectionError):
        return TTSError("could not reach the OpenAI speech endpoint", code="tts_unavailable")
    return TTSError(f"OpenAI speech failed: {type(exc).__name__}", code="tts_error")
