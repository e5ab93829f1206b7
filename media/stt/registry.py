"""Choose the STT provider from configuration; the default is the embedded Whisper."""

from __future__ import annotations

from collections.abc import Callable

from media.stt.base import STTProvider
from media.voice_config import VoiceConfig, secret

STTFactory = Callable[[VoiceConfig], STTProvider]
_FACTORIES: dict[str, STTFactory] = {}


def register(name: str, factory: STTFactory) -> None:
    """Make ``SALON_STT_PROVIDER=name`` build a provider with ``factory(config)``."""
    _FACTORIES[name] = factory


def known() -> list[str]:
    return sorted(_FACTORIES)


def _whisper(config: VoiceConfig) -> STTProvider:
    from media.stt.whisper import WhisperProvider

    return WhisperProvider(
        model_path=config.stt_model,
        language=config.stt_language,
        compute_type=config.stt_compute_type,
        beam_size=config.stt_beam_size,
        threads=config.stt_threads,
    )


def _openai(config: VoiceConfig) -> STTProvider:
    from media.stt.openai_stt import OpenAISTTProvider

    return OpenAISTTProvider(
        api_key=secret(config.stt_openai_api_key),
        base_url=config.stt_openai_base_url,
        model=config.stt_model,
        language=config.stt_language,
        timeout=config.stt_timeout_seconds,
    )


register("whisper", _whisper)
register("openai", _openai)


def create_stt(config: VoiceConfig | None = None) -> STTProvider:
    """Build the configured STT provider (not started).

    ``auto`` (the default) is the embedded faster-whisper; it reports a clear
    ``stt_unavailable`` error on first use when the ``voice`` extra is missing.
    """
    config = config or VoiceConfig()
    name = config.stt_provider.strip().lower() or "auto"
    if name in ("auto", "local", "faster-whisper"):
        name = "whisper"
    if name not in _FACTORIES:
        raise ValueError(f"unknown STT provider {name!r}; known: {', '.join(known())}")
    return _FACTORIES[name](config)
