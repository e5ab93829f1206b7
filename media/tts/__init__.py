"""Text to speech: one base (:mod:`media.tts.base`), one module per engine, a registry."""

from media.tts.base import TTSCapabilities, TTSError, TTSProvider, VoiceSettings
from media.tts.registry import create_tts

__all__ = ["TTSCapabilities", "TTSError", "TTSProvider", "VoiceSettings", "create_tts"]
