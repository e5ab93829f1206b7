"""Coqui XTTS-v2: multilingual neural TTS with voice cloning and streaming.

Optional and not part of the ``voice`` extra: the ``coqui-tts`` package is
large (torch, transformers) and the XTTS-v2 weights are under the Coqui
Public Model License, so an operator installs the package
(``pip install coqui-tts``) and puts the model folder (``config.json``,
``model.pth``, ``vocab.json``, ...) on disk, then sets
``SALON_TTS_XTTS_MODEL_DIR``. Nothing is downloaded at run time. The voice
is cloned from a short reference WAV (``SALON_TTS_XTTS_SPEAKER_WAV`` or
``VoiceSettings.reference_audio``); its conditioning latents are cached.

Inference runs on a worker thread and yields audio as XTTS streams it
(24 kHz float32, converted to PCM16).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from media.audio import AudioChunk, float32_to_pcm
from media.tts.base import (
    TTSCapabilities,
    TTSError,
    TTSProvider,
    VoiceSettings,
    iterate_in_thread,
    primary_language,
)

SAMPLE_RATE = 24000
LANGUAGES = (
    "en",
    "es",
    "fr",
    "de",
    "it",
    "pt",
    "pl",
    "tr",
    "ru",
    "nl",
    "cs",
    "ar",
    "zh-cn",
    "ja",
    "hu",
    "ko",
    "hi",
)
INSTALL_HINT = "install it with: pip install coqui-tts (see docs/voice.md)"


def xtts_language(language: str | None) -> str:
    """XTTS's code for ``language`` ("zh" -> "zh-cn", "de-AT" -> "de"); English if unknown."""
    if not language:
        return "en"
    wanted = language.strip().lower().replace("_", "-")
    if wanted in LANGUAGES:
        return wanted
    primary = primary_language(wanted)
    return next((code for code in LANGUAGES if primary_language(code) == primary), "en")


class XTTSProvider(TTSProvider):
    """XTTS-v2 from a local model folder; see the module docstring."""

    name = "xtts"
    capabilities = TTSCapabilities(
        streaming=True,
        languages=LANGUAGES,
        cloning=True,
        # XTTS takes its delivery from the reference recording; it has no
        # emotion control (temperature only trades stability for variety).
        emotion=False,
        local=True,
        output_formats=("pcm", "wav"),
    )

    def __init__(
        self,
        *,
        model_dir: str | Path | None,
        speaker_wav: str | Path | None = None,
        device: str = "cpu",
    ) -> None:
        if not model_dir:
            raise TTSError(
                "the XTTS provider needs a local XTTS-v2 model folder: set SALON_TTS_XTTS_MODEL_DIR",
                code="tts_unavailable",
            )
        self.model_dir = Path(model_dir)
        self.speaker_wav = str(speaker_wav) if speaker_wav else None
        self.device = device
        self._model: Any = None
        self._latents: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is not None:
                return self._model
            try:
                from TTS.tts.configs.xtts_config import XttsConfig
                from TTS.tts.models.xtts import Xtts
            except ImportError as exc:
                raise TTSError(
                    f"the XTTS provider needs the coqui-tts package; {INSTALL_HINT}",
                    code="tts_unavailable",
                ) from exc
            config_file = self.model_dir / "config.json"
            if not config_file.is_file():
                raise TTSError(
                    f"no XTTS-v2 model in {self.model_dir} (config.json missing); "
                    "set SALON_TTS_XTTS_MODEL_DIR to the folder holding the weights",
                    code="tts_unavailable",
                )
            config = XttsConfig()
            config.load_json(str(config_file))
            model = Xtts.init_from_config(config)
            model.load_checkpoint(config, checkpoint_dir=str(self.model_dir), use_deepspeed=False)
            model.to(self.device)
            self._model = model
            return model

    def _conditioning(self, model: Any, reference: str) -> tuple[Any, Any]:
        if reference not in self._latents:
            latent, embedding = model.get_conditioning_latents(audio_path=[reference])
            self._latents[reference] = (latent, embedding)
        return self._latents[reference]

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    async def close(self) -> None:
        self._model = None
        self._latents.clear()

    async def synthesize(self, text: str, voice: VoiceSettings) -> AsyncIterator[AudioChunk]:
        if not text.strip():
            return
        reference = voice.reference_audio or self.speaker_wav
        if not reference:
            raise TTSError(
                "XTTS clones a voice from a reference WAV: set SALON_TTS_XTTS_SPEAKER_WAV "
                "or the persona voice's reference audio",
                code="tts_bad_request",
            )
        language = xtts_language(voice.language)
        speed = min(max(voice.speed, 0.5), 2.0)

        def produce(stop: threading.Event) -> Iterator[AudioChunk]:
            model = self._load()
            latent, embedding = self._conditioning(model, reference)
            for piece in model.inference_stream(text, language, latent, embedding, speed=speed):
                if stop.is_set():
                    return
                yield AudioChunk(float32_to_pcm(piece.cpu().numpy()), SAMPLE_RATE)

        async for chunk in iterate_in_thread(produce):
            yield chunk
