"""STT provider base: transcribe one utterance of PCM16 audio to text.

One small base, one module per implementation (:mod:`media.stt.whisper`, the
embedded default with faster-whisper; :mod:`media.stt.openai_stt`), chosen by
configuration through :mod:`media.stt.registry`. Input is what the rest of
Salon carries: mono PCM16 with its sample rate (an utterance cut by
:mod:`media.vad`, or a decoded upload). Every failure is an
:class:`STTError` with a stable ``code``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from media.audio import AudioChunk


@dataclass(frozen=True)
class Segment:
    """A timed piece of a transcript (seconds from the start of the audio)."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None = None
    duration: float = 0.0
    segments: tuple[Segment, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class STTCapabilities:
    """What a provider can do, declared as data."""

    languages: tuple[str, ...] = ("en",)
    local: bool = False
    timestamps: bool = True
    sample_rate: int = 16000  # what the model works at; other rates are resampled


class STTError(Exception):
    """Transcription failed. ``code`` is stable and safe to show or log.

    Codes: ``stt_unavailable`` (package, model or key missing), ``stt_bad_request``
    (unreadable or empty audio), ``stt_timeout``, ``stt_error``.
    """

    def __init__(self, message: str, *, code: str = "stt_error") -> None:
        super().__init__(message)
        self.code = code


class STTProvider(ABC):
    """Transcribe a finished utterance."""

    name: str = "base"
    capabilities: STTCapabilities = STTCapabilities()

    async def start(self) -> None:
        """Load the model or open the client ahead of the first call (optional)."""

    async def close(self) -> None:
        """Release what :meth:`start` or the first call acquired."""

    @abstractmethod
    async def transcribe(
        self, audio: AudioChunk, *, language: str | None = None, prompt: str | None = None
    ) -> Transcript:
        """The text spoken in ``audio`` (mono PCM16, any sample rate).

        ``language`` is an ISO 639-1 hint (``None`` = detect or the configured
        one); ``prompt`` is context that helps with names and spelling.
        """
