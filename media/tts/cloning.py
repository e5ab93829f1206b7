"""Voice cloning providers: make a provider voice from reference audio, and delete it.

One small base (:class:`VoiceCloner`), one module per implementation
(:mod:`media.tts.elevenlabs_clone`: ElevenLabs Instant Voice Cloning over its
HTTP API; :mod:`media.tts.xtts_clone`: XTTS-v2, which clones at synthesis time
from the reference audio itself), chosen by configuration through
:func:`create_cloner`. The workflow around them (consent records, stored
reference audio, audit, revocation) is :mod:`agents.voice_catalog`; the HTTP
routes are server/voices_api.py; docs/voice-cloning.md describes both.

A cloner knows nothing of tenants or consent: it gets PCM16 samples and a
name, and answers with the provider's voice id. Every failure is a
:class:`CloningError` with a stable ``code``. :func:`prepare_samples` turns
uploaded files into those samples and refuses audio no provider should
clone from (unreadable, too short, silent).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from media.audio import AudioChunk, AudioFormatError, decode
from media.voice_config import VoiceConfig

CLONING_VARIABLE = "SALON_VOICE_CLONING_PROVIDER"
# Reference audio is kept as PCM16 mono at this rate: all of speech's
# bandwidth, what XTTS works at, and half the bytes of 48 kHz.
SAMPLE_RATE = 24000
# More reference audio does not make a better instant clone (ElevenLabs
# advises 1-2 minutes); the cap bounds the decoded size (~29 MB at 24 kHz).
MAX_TOTAL_SECONDS = 600.0
# A peak under 1% of full scale (-40 dBFS) is silence or a muted microphone.
SILENCE_PEAK = 328


class CloningError(Exception):
    """Cloning (or deleting a clone) failed. ``code`` is stable and safe to show or log.

    Codes: ``cloning_unavailable`` (not configured, key refused, provider
    unreachable at start), ``cloning_bad_request`` (the provider refused the
    samples or the name), ``cloning_rate_limited`` (the provider throttles us
    or a quota is used up), ``cloning_timeout``, ``cloning_error`` (anything
    else, including the provider being unreachable).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ReferenceAudioError(ValueError):
    """Uploaded reference audio that no provider should clone from; ``code`` is stable.

    Codes: ``invalid_audio`` (not decodable), ``audio_too_short``,
    ``audio_too_long``, ``audio_silent``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _peak(pcm: bytes) -> int:
    import numpy as np

    if not pcm:
        return 0
    return int(np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32)).max())


def prepare_samples(files: Sequence[bytes], *, min_seconds: float) -> list[AudioChunk]:
    """Uploaded audio files -> mono PCM16 at :data:`SAMPLE_RATE`, checked for cloning.

    WAV always, other formats with PyAV (:func:`media.audio.decode`). Blocking
    (decoding and resampling): call it on a worker thread. Raises
    :class:`ReferenceAudioError` for audio that is unreadable, shorter than
    ``min_seconds`` in all, longer than :data:`MAX_TOTAL_SECONDS`, or silent.
    """
    samples = []
    for i, data in enumerate(files, 1):
        try:
            chunk = decode(data, SAMPLE_RATE)
        except AudioFormatError as exc:
            raise ReferenceAudioError("invalid_audio", f"sample {i}: {exc}") from exc
        if not chunk.data:
            raise ReferenceAudioError("invalid_audio", f"sample {i} holds no audio")
        samples.append(chunk)
    total = sum(s.duration for s in samples)
    if total < min_seconds:
        raise ReferenceAudioError(
            "audio_too_short",
            f"the reference audio lasts {total:.1f} s; at least {min_seconds:g} s are needed",
        )
    if total > MAX_TOTAL_SECONDS:
        raise ReferenceAudioError(
            "audio_too_long",
            f"the reference audio lasts {total:.0f} s; at most {MAX_TOTAL_SECONDS:g} s are used",
        )
    if max(_peak(s.data) for s in samples) < SILENCE_PEAK:
        raise ReferenceAudioError("audio_silent", "the reference audio is silent")
    return samples


@dataclass(frozen=True)
class ClonedVoice:
    """What a provider made of the samples.

    ``provider_voice_id`` is the id to synthesize with (an ElevenLabs voice
    id). ``requires_verification``: the provider will not speak with it until
    the speaker verifies it on the provider's side (ElevenLabs professional
    clones). ``reference``: audio a *local* engine reads at every synthesis
    (XTTS); the caller stores it and hands its path back through
    :attr:`media.tts.base.VoiceSettings.reference_audio`. None for remote
    providers, which keep their own copy.
    """

    provider: str
    provider_voice_id: str
    requires_verification: bool = False
    reference: AudioChunk | None = None


class VoiceCloner(ABC):
    """Create and delete cloned voices at one provider."""

    name: str = "base"
    max_samples: int = 25  # reference files per voice the provider accepts

    @abstractmethod
    async def create(
        self,
        name: str,
        samples: list[AudioChunk],
        *,
        description: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> ClonedVoice:
        """Clone a voice from ``samples`` (PCM16 mono, any rate, at least one).

        ``labels`` are stored with the voice where the provider keeps labels
        (ElevenLabs); Salon puts its own voice id there, so a clone found in
        the provider's console can be traced back to its consent record.
        """

    @abstractmethod
    async def delete(self, provider_voice_id: str) -> None:
        """Delete the voice at the provider; a voice the provider no longer has is not an error."""

    async def close(self) -> None:
        """Release clients (HTTP connections)."""


ClonerFactory = Callable[[VoiceConfig], VoiceCloner]
_FACTORIES: dict[str, ClonerFactory] = {}


def register(name: str, factory: ClonerFactory) -> None:
    """Make ``SALON_VOICE_CLONING_PROVIDER=name`` build a cloner with ``factory(config)``."""
    _FACTORIES[name] = factory


def known() -> list[str]:
    return sorted(_FACTORIES)


def _elevenlabs(config: VoiceConfig) -> VoiceCloner:
    from media.tts.elevenlabs_clone import ElevenLabsCloner

    return ElevenLabsCloner.from_config(config)


def _xtts(config: VoiceConfig) -> VoiceCloner:
    from media.tts.xtts_clone import XTTSCloner

    return XTTSCloner.from_config(config)


register("elevenlabs", _elevenlabs)
register("xtts", _xtts)


def cloning_provider(config: VoiceConfig) -> str | None:
    """The cloning provider's name that ``config`` selects, or None when cloning is off.

    ``auto`` (the default) picks ElevenLabs when its API key is set, else XTTS
    when its model folder is set, else nothing: cloning is an opt-in feature
    that needs a provider able to speak with the result.
    """
    name = (config.voice_cloning_provider or "auto").strip().lower()
    if name in ("off", "none", "false", "0", ""):
        return None
    if name == "auto":
        if config.tts_elevenlabs_api_key is not None:
            return "elevenlabs"
        if config.tts_xtts_model_dir is not None:
            return "xtts"
        return None
    if name not in _FACTORIES:
        raise ValueError(
            f"unknown voice cloning provider {name!r} ({CLONING_VARIABLE}); "
            f"known: auto, off, {', '.join(known())}"
        )
    return name


def build_cloner(name: str, config: VoiceConfig | None = None) -> VoiceCloner:
    """Build the cloner registered as ``name`` (e.g. the provider a stored voice was made with)."""
    if name not in _FACTORIES:
        raise CloningError("cloning_unavailable", f"no voice cloning provider {name!r}")
    return _FACTORIES[name](config or VoiceConfig())


def create_cloner(config: VoiceConfig | None = None) -> VoiceCloner | None:
    """Build the configured cloner, or None when cloning is off (see :func:`cloning_provider`).

    A provider that is named but cannot work (no key, no model folder) raises
    :class:`CloningError` ``cloning_unavailable`` naming the variable to set.
    """
    config = config or VoiceConfig()
    name = cloning_provider(config)
    return build_cloner(name, config) if name is not None else None


def unavailable_message(config: VoiceConfig) -> str:
    """What to tell a caller when :func:`create_cloner` gives None: the variables to set."""
    return (
        "voice cloning is off: set SALON_TTS_ELEVENLABS_API_KEY (ElevenLabs) or "
        f"SALON_TTS_XTTS_MODEL_DIR (XTTS), or {CLONING_VARIABLE}=elevenlabs|xtts "
        f"(now {config.voice_cloning_provider!r})"
    )
