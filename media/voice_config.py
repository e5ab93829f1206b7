"""Voice configuration (TTS, STT, VAD and the audio HTTP routes), from the environment.

Its own settings class so the voice layer can be configured, built and
tested without the server's :class:`server.config.Settings`. Variables keep
the project's ``SALON_`` prefix, grouped as ``SALON_TTS_*``, ``SALON_STT_*``
and ``SALON_VOICE_*``. Every field is documented in docs/voice.md.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class VoiceConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SALON_", env_file=None, extra="ignore")

    # -- text to speech (media/tts)
    # auto = Piper when the voice extra is installed, else espeak-ng.
    tts_provider: str = "auto"
    tts_voice: str | None = None  # the provider's default voice id
    tts_language: str | None = None
    tts_timeout_seconds: float = 30.0
    tts_piper_model: Path | None = None  # another Piper .onnx voice; default: bundled joe
    tts_espeak_binary: str = "espeak-ng"
    tts_elevenlabs_api_key: SecretStr | None = None
    tts_elevenlabs_base_url: str | None = None
    tts_elevenlabs_model: str | None = None
    tts_elevenlabs_sample_rate: int = 24000
    tts_openai_api_key: SecretStr | None = None
    tts_openai_base_url: str | None = None
    tts_openai_model: str | None = None
    tts_xtts_model_dir: Path | None = None
    tts_xtts_speaker_wav: Path | None = None

    # -- speech to text (media/stt)
    stt_provider: str = "auto"  # auto = faster-whisper when installed; openai
    stt_model: str | None = None  # whisper: a CTranslate2 model folder; openai: model name
    stt_language: str | None = None
    stt_compute_type: str = "int8"
    stt_beam_size: int = 1
    stt_threads: int = 2
    stt_openai_api_key: SecretStr | None = None
    stt_openai_base_url: str | None = None
    stt_timeout_seconds: float = 60.0

    # -- voice activity (media/vad.py)
    voice_vad_threshold: float = 0.5
    voice_vad_silence_ms: int = 600
    voice_vad_min_speech_ms: int = 250
    voice_vad_max_utterance_seconds: float = 30.0

    # -- HTTP routes (server/audio_api.py)
    voice_max_speech_chars: int = 4096
    voice_max_upload_bytes: int = 25 * 1024 * 1024
    voice_requests_per_minute: int = 60
    voice_preload: bool = False  # load local models on the first request, not at start

    # -- expressive speech (agents/voice.py): emotion and language per sentence
    voice_emotion: str = (
        "auto"  # auto = from each sentence's sentiment unless the persona fixes one; off
    )
    voice_detect_language: bool = True  # detect a reply's language unless the persona fixes one
    # Speaks languages the configured provider cannot (e.g. German with the English Piper voice).
    voice_language_fallback: str = "espeak"  # a provider name, or "" for none

    # -- voice cloning (media/tts/cloning.py, server/voices_api.py)
    # auto = ElevenLabs when its key is set, else XTTS when its model folder is set, else off.
    voice_cloning_provider: str = "auto"
    voice_clone_max_bytes: int = 20 * 1024 * 1024  # all reference samples of one voice together
    voice_clone_min_seconds: float = 3.0  # reference audio shorter than this is refused


def secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
