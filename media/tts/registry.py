"""Choose the TTS provider from configuration; the default is the embedded voice.

``SALON_TTS_PROVIDER=auto`` (the default) picks Piper with the bundled voice
when the ``voice`` extra is installed and espeak-ng otherwise, so a plain
install still speaks. Providers register a factory taking the
:class:`~media.voice_config.VoiceConfig`; heavy imports happen inside them.
"""

from __future__ import annotations

from collections.abc import Callable

from media.tts.base import TTSProvider
from media.voice_config import VoiceConfig, secret

TTSFactory = Callable[[VoiceConfig], TTSProvider]
_FACTORIES: dict[str, TTSFactory] = {}


def register(name: str, factory: TTSFactory) -> None:
    """Make ``SALON_TTS_PROVIDER=name`` build a provider with ``factory(config)``."""
    _FACTORIES[name] = factory


def known() -> list[str]:
    return sorted(_FACTORIES)


def _piper(config: VoiceConfig) -> TTSProvider:
    from media.tts.piper import PiperProvider

    return PiperProvider(model_path=config.tts_piper_model)


def _espeak(config: VoiceConfig) -> TTSProvider:
    from media.tts.espeak import EspeakProvider

    return EspeakProvider(
        binary=config.tts_espeak_binary,
        default_voice=config.tts_voice or config.tts_language or "en-us",
    )


def _elevenlabs(config: VoiceConfig) -> TTSProvider:
    from media.tts.elevenlabs import ElevenLabsProvider

    return ElevenLabsProvider(
        api_key=secret(config.tts_elevenlabs_api_key),
        base_url=config.tts_elevenlabs_base_url,
        model=config.tts_elevenlabs_model,
        default_voice=config.tts_voice,
        sample_rate=config.tts_elevenlabs_sample_rate,
        timeout=config.tts_timeout_seconds,
    )


def _openai(config: VoiceConfig) -> TTSProvider:
    from media.tts.openai_tts import OpenAITTSProvider

    return OpenAITTSProvider(
        api_key=secret(config.tts_openai_api_key),
        base_url=config.tts_openai_base_url,
        model=config.tts_openai_model,
        default_voice=config.tts_voice,
        timeout=config.tts_timeout_seconds,
    )


def _xtts(config: VoiceConfig) -> TTSProvider:
    from media.tts.xtts import XTTSProvider

    return XTTSProvider(
        model_dir=config.tts_xtts_model_dir, speaker_wav=config.tts_xtts_speaker_wav
    )


register("piper", _piper)
register("espeak", _espeak)
register("elevenlabs", _elevenlabs)
register("openai", _openai)
register("xtts", _xtts)


def create_tts(config: VoiceConfig | None = None) -> TTSProvider:
    """Build the configured TTS provider (not started)."""
    config = config or VoiceConfig()
    name = config.tts_provider.strip().lower() or "auto"
    if name == "espeak-ng":
        name = "espeak"
    if name == "auto":
        from media.tts.piper import piper_available

        name = "piper" if config.tts_piper_model or piper_available() else "espeak"
    if name not in _FACTORIES:
        raise ValueError(f"unknown TTS provider {name!r}; known: {', '.join(known())}")
    return _FACTORIES[name](config)
