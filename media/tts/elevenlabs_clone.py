"""ElevenLabs Instant Voice Cloning over its HTTP API.

- ``POST {base_url}/v1/voices/add``: a multipart form with ``name``, one
  ``files`` part per sample (we send WAV), ``description``, ``labels`` (a JSON
  object serialized as a string) and ``remove_background_noise``; the answer
  is ``{"voice_id": ..., "requires_verification": bool}``.
- ``DELETE {base_url}/v1/voices/{voice_id}``.

Both with the ``xi-api-key`` header. httpx, not the SDK, for the reasons in
media/tts/elevenlabs.py: the same key, base URL and timeout settings as the
TTS provider (``SALON_TTS_ELEVENLABS_*``), so a clone is spoken by the
provider that made it.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx

from media.audio import AudioChunk, wav_bytes
from media.tts.cloning import ClonedVoice, CloningError, VoiceCloner
from media.tts.elevenlabs import DEFAULT_BASE_URL
from media.voice_config import VoiceConfig, secret

# Uploading a minute of WAV and building the clone takes a few seconds.
DEFAULT_TIMEOUT = 60.0


class ElevenLabsCloner(VoiceCloner):
    """Instant voice clones at ElevenLabs; the voice id is then spoken by ``ElevenLabsProvider``."""

    name = "elevenlabs"
    max_samples = 25  # ElevenLabs' limit for one instant clone

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        remove_background_noise: bool = False,
    ) -> None:
        if not api_key:
            raise CloningError(
                "cloning_unavailable",
                "ElevenLabs voice cloning needs an API key: set SALON_TTS_ELEVENLABS_API_KEY",
            )
        self.remove_background_noise = remove_background_noise
        self._client = httpx.AsyncClient(
            base_url=(base_url or DEFAULT_BASE_URL).rstrip("/"),
            headers={"xi-api-key": api_key},
            timeout=httpx.Timeout(timeout, connect=5.0),
        )

    @classmethod
    def from_config(cls, config: VoiceConfig) -> ElevenLabsCloner:
        """The cloner for the ``SALON_TTS_ELEVENLABS_*`` settings the TTS provider uses too."""
        return cls(
            api_key=secret(config.tts_elevenlabs_api_key),
            base_url=config.tts_elevenlabs_base_url,
            # httpx's read timeout waits for the answer, not the whole call:
            # the TTS setting (30 s by default) bounds the clone's wait too.
            timeout=config.tts_timeout_seconds,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def create(
        self,
        name: str,
        samples: list[AudioChunk],
        *,
        description: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> ClonedVoice:
        if not samples:
            raise CloningError("cloning_bad_request", "at least one reference sample is needed")
        if len(samples) > self.max_samples:
            raise CloningError(
                "cloning_bad_request", f"ElevenLabs takes at most {self.max_samples} samples"
            )
        data: dict[str, str] = {
            "name": name,
            "remove_background_noise": "true" if self.remove_background_noise else "false",
        }
        if description:
            data["description"] = description
        if labels:
            data["labels"] = json.dumps(labels)
        files = [
            ("files", (f"sample-{i}.wav", wav_bytes(s.data, s.sample_rate), "audio/wav"))
            for i, s in enumerate(samples, 1)
        ]
        response = await self._send("POST", "/v1/voices/add", data=data, files=files)
        if response.status_code != 200:
            raise _status_error(response, "cloning")
        try:
            body = response.json()
            voice_id = body["voice_id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CloningError("cloning_error", "ElevenLabs answered without a voice id") from exc
        if not isinstance(voice_id, str) or not voice_id:
            raise CloningError("cloning_error", "ElevenLabs answered without a voice id")
        return ClonedVoice(
            provider=self.name,
            provider_voice_id=voice_id,
            requires_verification=bool(body.get("requires_verification", False)),
        )

    async def delete(self, provider_voice_id: str) -> None:
        if not provider_voice_id or "/" in provider_voice_id:
            raise CloningError("cloning_bad_request", "not an ElevenLabs voice id")
        response = await self._send("DELETE", f"/v1/voices/{provider_voice_id}")
        # 404: deleted already (by us earlier, or by hand in the ElevenLabs
        # console); what revoking wants, the voice being gone, is true.
        if response.status_code in (200, 204, 404):
            return
        raise _status_error(response, "deleting the voice")

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise CloningError("cloning_timeout", "ElevenLabs did not answer in time") from exc
        except httpx.TransportError as exc:
            raise CloningError("cloning_error", "could not reach ElevenLabs") from exc


def _status_error(response: httpx.Response, doing: str) -> CloningError:
    """An ElevenLabs error answer as a :class:`CloningError` (its detail kept, never our key)."""
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
    if status in (401, 403):
        code = "cloning_unavailable"
    elif status == 429:
        code = "cloning_rate_limited"
    elif status in (400, 404, 413, 422):
        code = "cloning_bad_request"
    else:
        code = "cloning_error"
    message = f"ElevenLabs answered HTTP {status} while {doing}"
    if status == 401:
        message += " (check SALON_TTS_ELEVENLABS_API_KEY)"
    return CloningError(code, f"{message}: {detail[:300]}" if detail else message)
