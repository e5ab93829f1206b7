"""TTS provider base: stream speech for a piece of text as PCM16 chunks.

One small base, one module per implementation (:mod:`media.tts.piper` and
:mod:`media.tts.espeak`, the embedded defaults; :mod:`media.tts.elevenlabs`,
:mod:`media.tts.openai_tts`, :mod:`media.tts.xtts`), chosen by configuration
through :mod:`media.tts.registry`.

Providers synthesize one sentence (or any short text) per call and yield
:class:`~media.audio.AudioChunk` values as soon as the engine has them, so
the first audio reaches a listener before the whole text is rendered. Text is
split into sentences by the caller (:mod:`agents.speech`). Cancelling the
consumer (``aclose`` on the iterator) stops the engine or the HTTP request.
Every failure is a :class:`TTSError` with a stable ``code``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from media.audio import AudioChunk

# OpenAI's voice names: an OpenAI-compatible client always sends one, so local
# engines treat them as "the configured default voice" instead of failing.
OPENAI_VOICES = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    }
)


@dataclass(frozen=True)
class VoiceSettings:
    """How to speak: the per-persona (or per-request) voice.

    ``voice`` is the provider's own voice id (an espeak-ng voice such as
    ``en-us``, an ElevenLabs voice id, an OpenAI voice name, a Piper model
    path); ``None`` means the provider's configured default. ``speed`` is a
    rate multiplier (1.0 = normal). ``emotion`` and ``reference_audio``
    (voice cloning) are used only by providers whose capabilities say so.
    """

    voice: str | None = None
    language: str | None = None
    speed: float = 1.0
    emotion: str | None = None
    reference_audio: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TTSCapabilities:
    """What a provider can do, declared as data."""

    streaming: bool = True  # first audio before the whole text is rendered
    languages: tuple[str, ...] = ("en",)
    cloning: bool = False
    emotion: bool = False
    local: bool = False
    sample_rates: tuple[int, ...] = ()  # the rates it emits; () = one fixed native rate
    output_formats: tuple[str, ...] = ("pcm",)


class TTSError(Exception):
    """Synthesis failed. ``code`` is stable and safe to show or log.

    Codes: ``tts_unavailable`` (a package, binary, model or key is missing),
    ``tts_bad_request`` (unknown voice, empty text), ``tts_timeout``,
    ``tts_error`` (anything else).
    """

    def __init__(self, message: str, *, code: str = "tts_error") -> None:
        super().__init__(message)
        self.code = code


class TTSProvider(ABC):
    """Turn text into a stream of PCM16 audio chunks."""

    name: str = "base"
    capabilities: TTSCapabilities = TTSCapabilities()

    async def start(self) -> None:
        """Load models, check binaries or open clients (optional, ahead of the first call)."""

    async def close(self) -> None:
        """Release what :meth:`start` or the first call acquired."""

    @abstractmethod
    def synthesize(self, text: str, voice: VoiceSettings) -> AsyncIterator[AudioChunk]:
        """Yield the speech for ``text`` as PCM16 mono chunks, in order.

        Every chunk declares its ``sample_rate``; a provider keeps one rate
        for a whole call. Closing the iterator early must stop the work.
        """

    async def synthesize_all(self, text: str, voice: VoiceSettings | None = None) -> AudioChunk:
        """The whole speech for ``text`` as one chunk (HTTP bodies, tests)."""
        parts: list[bytes] = []
        rate = 0
        async for chunk in self.synthesize(text, voice or VoiceSettings()):
            parts.append(chunk.data)
            rate = chunk.sample_rate
        return AudioChunk(b"".join(parts), rate or 16000)


async def iterate_in_thread(
    produce: Callable[[threading.Event], Iterable[AudioChunk]],
    *,
    queue_size: int = 8,
) -> AsyncIterator[AudioChunk]:
    """Run a blocking chunk generator on a worker thread and yield its chunks here.

    Local engines (Piper, XTTS) are CPU-bound and would freeze every socket
    if run on the event loop. ``produce`` gets a stop event it should check
    between chunks: closing this iterator sets it, so a cancelled sentence
    stops costing CPU after the chunk in progress. The bounded queue keeps a
    slow consumer from buffering a whole paragraph of audio.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(queue_size)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> None:
        # Blocks the worker (not the loop) while the queue is full.
        future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        while not stop.is_set():
            try:
                future.result(timeout=0.1)
                return
            except TimeoutError:
                continue
        future.cancel()

    def work() -> None:
        try:
            for chunk in produce(stop):
                if stop.is_set():
                    break
                put(chunk)
            put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    worker = loop.run_in_executor(None, work)
    try:
        while True:
            item = await queue.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # Free a worker blocked on a full queue, then let it finish in the background.
        while not queue.empty():
            queue.get_nowait()
        if not worker.done():
            worker.add_done_callback(_ignore_result)
        else:
            with contextlib.suppress(BaseException):
                worker.result()


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
