"""Speech to text: one base (:mod:`media.stt.base`), one module per engine, a registry."""

from media.stt.base import STTError, STTProvider, Transcript
from media.stt.registry import create_stt

__all__ = ["STTError", "STTProvider", "Transcript", "create_stt"]
