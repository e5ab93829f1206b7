"""XTTS-v2 "cloning": the voice *is* its reference audio.

XTTS has no voice registry to upload to: it computes speaker latents from a
reference WAV at synthesis time (media/tts/xtts.py caches them per file).
So creating a clone checks the samples and joins them into one reference
recording, which the caller stores and later hands to ``XTTSProvider``
through ``VoiceSettings.reference_audio``; deleting it at the provider is a
no-op, and what really revokes the voice is deleting that stored file
(agents/voice_catalog.py does both). Nothing here imports coqui-tts, so the
workflow runs, and is tested, without the model.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from media.audio import SAMPLE_WIDTH, AudioChunk, resample
from media.tts.cloning import ClonedVoice, CloningError, VoiceCloner
from media.voice_config import VoiceConfig

# XTTS resamples references to 22.05 kHz for its latents; 24 kHz keeps all of
# that and matches its output rate.
REFERENCE_RATE = 24000
# Half a second of silence between joined samples, so the last word of one
# does not run into the first of the next in the speaker encoder's input.
GAP_SECONDS = 0.5


class XTTSCloner(VoiceCloner):
    """Local clones for ``XTTSProvider``: one joined reference recording per voice."""

    name = "xtts"
    max_samples = 25

    def __init__(self, *, model_dir: str | Path | None) -> None:
        if not model_dir:
            raise CloningError(
                "cloning_unavailable",
                "XTTS voice cloning needs the XTTS-v2 model folder that will speak the voice: "
                "set SALON_TTS_XTTS_MODEL_DIR",
            )
        self.model_dir = Path(model_dir)

    @classmethod
    def from_config(cls, config: VoiceConfig) -> XTTSCloner:
        return cls(model_dir=config.tts_xtts_model_dir)

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
                "cloning_bad_request", f"XTTS takes at most {self.max_samples} samples"
            )
        gap = b"\x00" * (int(REFERENCE_RATE * GAP_SECONDS) * SAMPLE_WIDTH)
        parts: list[bytes] = []
        for sample in samples:
            if sample.channels != 1 or sample.sample_rate <= 0 or not sample.data:
                raise CloningError(
                    "cloning_bad_request", "reference samples must be non-empty mono PCM16"
                )
            if parts:
                parts.append(gap)
            parts.append(resample(sample.data, sample.sample_rate, REFERENCE_RATE))
        # The Salon voice id when the caller gives it (one id in logs and
        # storage); the "provider" has no ids of its own.
        voice_id = (labels or {}).get("salon_voice_id") or f"xtts_{secrets.token_hex(8)}"
        return ClonedVoice(
            provider=self.name,
            provider_voice_id=voice_id,
            requires_verification=False,
            reference=AudioChunk(b"".join(parts), REFERENCE_RATE),
        )

    async def delete(self, provider_voice_id: str) -> None:
        """Nothing is held at the provider; the caller deletes the stored reference file."""
