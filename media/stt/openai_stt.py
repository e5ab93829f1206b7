"""OpenAI transcription (or any server with an OpenAI-compatible ``/v1/audio/transcriptions``).

Uses the official ``openai`` SDK (a core dependency). The utterance is sent
as a WAV file, which every compatible server (OpenAI, whisper.cpp server,
faster-whisper-server, vLLM) accepts.
"""

from __future__ import annotations

from typing import Any

import openai

from media.audio import AudioChunk, wav_bytes
from media.stt.base import STTCapabilities, STTError, STTProvider, Transcript

DEFAULT_MODEL = "whisper-1"


class OpenAISTTProvider(STTProvider):
    """Transcribe through an OpenAI-compatible endpoint."""

    name = "openai"

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        model: str | None = None,
        language: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        if not api_key and not base_url:
            raise STTError(
                "the OpenAI STT provider needs an API key: set SALON_STT_OPENAI_API_KEY "
                "(or SALON_STT_OPENAI_BASE_URL for a compatible server that needs none)",
                code="stt_unavailable",
            )
        self.model = model or DEFAULT_MODEL
        self.language = language
        self.capabilities = STTCapabilities(languages=("*",), timestamps=False)
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "not-needed",
            base_url=base_url,
            timeout=openai.Timeout(timeout, connect=5.0),
            max_retries=1,
        )

    async def close(self) -> None:
        await self._client.close()

    async def transcribe(
        self, audio: AudioChunk, *, language: str | None = None, prompt: str | None = None
    ) -> Transcript:
        if not audio.data:
            return Transcript(text="", language=language or self.language)
        request: dict[str, Any] = {
            "model": self.model,
            "file": ("audio.wav", wav_bytes(audio.data, audio.sample_rate), "audio/wav"),
            "response_format": "json",
        }
        if language or self.language:
            request["language"] = language or self.language
        if prompt:
            request["prompt"] = prompt
        try:
            result = await self._client.audio.transcriptions.create(**request)
        except openai.APITimeoutError as exc:
            raise STTError(
                "the transcription endpoint did not answer in time", code="stt_timeout"
            ) from exc
        except openai.AuthenticationError as exc:
            raise STTError(
                "the transcription endpoint refused the key (check SALON_STT_OPENAI_API_KEY)",
                code="stt_unavailable",
            ) from exc
        except openai.APIStatusError as exc:
            code = "stt_bad_request" if exc.status_code in (400, 413, 415, 422) else "stt_error"
            raise STTError(
                f"the transcription endpoint answered HTTP {exc.status_code}", code=code
            ) from exc
        except openai.APIConnectionError as exc:
            raise STTError(
                "could not reach the transcription endpoint", code="stt_unavailable"
            ) from exc
        text = getattr(result, "text", None)
        if not isinstance(text, str):
            raise STTError("the transcription endpoint returned no text", code="stt_error")
        return Transcript(
            text=text.strip(), language=language or self.language, duration=audio.duration
        )
