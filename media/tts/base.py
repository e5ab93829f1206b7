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
import contextvars
import heapq
import itertools
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Executor, Future
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


# The emotions Salon derives from a sentence's sentiment (agents/voice_style.py)
# and maps to each provider's controls (docs/voice.md, "Emotion"). A persona
# may name any other emotion: providers that take free text (OpenAI's
# ``instructions``) use it, the others ignore what they have no mapping for.
EMOTIONS = ("neutral", "cheerful", "excited", "sad", "angry")

# True while a reply's first audio is being synthesized: engines that queue
# work on a few threads (Piper) run it ahead of later sentences, which have
# the earlier sentences' playing time to spare (agents/speech.py sets it).
first_audio: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "salon_tts_first_audio", default=False
)


def primary_language(language: str) -> str:
    """``"en"`` for ``"en-US"``, ``"en_us"`` or ``"EN"``."""
    return language.strip().lower().replace("_", "-").split("-")[0]


@dataclass(frozen=True)
class VoiceSettings:
    """How to speak: the per-persona (or per-request) voice.

    ``voice`` is the provider's own voice id (an espeak-ng voice such as
    ``en-us``, an ElevenLabs voice id, an OpenAI voice name, a Piper model
    path); ``None`` means the provider's configured default. ``speed`` is a
    rate multiplier (1.0 = normal). ``emotion`` (one of :data:`EMOTIONS`, or
    free text for providers that take it) and ``reference_audio`` (voice
    cloning) are used only by providers whose capabilities say so.
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
    languages: tuple[str, ...] = ("en",)  # ("*",): many, steered by VoiceSettings.language
    cloning: bool = False
    emotion: bool = False  # VoiceSettings.emotion changes the speech (docs/voice.md, "Emotion")
    local: bool = False
    sample_rates: tuple[int, ...] = ()  # the rates it emits; () = one fixed native rate
    output_formats: tuple[str, ...] = ("pcm",)

    def speaks(self, language: str) -> bool:
        """Can this provider speak ``language`` (compared by primary subtag: en-GB ~ en)?"""
        if "*" in self.languages:
            return True
        wanted = primary_language(language)
        return any(primary_language(known) == wanted for known in self.languages)


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


class PriorityExecutor(Executor):
    """A few worker threads that take queued work in priority order.

    For CPU-bound engines on few cores: running more syntheses at once than
    there are cores only makes every one of them late, so the work queues
    here instead, and :meth:`submit_first` (a reply's first audio) goes ahead
    of ordinary work queued less than ``head_start`` seconds before it. The
    head start is bounded so later sentences are delayed, never starved.
    """

    def __init__(self, workers: int, *, head_start: float = 1.0, name: str = "salon-tts") -> None:
        self.workers = max(1, workers)
        self.head_start = head_start
        self._name = name
        self._queue: list[tuple[float, int, Future[Any], Callable[[], Any]]] = []
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._put(lambda: fn(*args, **kwargs), first=False)

    def submit_first(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """As :meth:`submit`, ahead of ordinary work queued in the last ``head_start`` s."""
        return self._put(lambda: fn(*args, **kwargs), first=True)

    def _put(self, call: Callable[[], Any], *, first: bool) -> Future[Any]:
        future: Future[Any] = Future()
        due = time.monotonic() - (self.head_start if first else 0.0)
        with self._ready:
            if self._shutdown:
                raise RuntimeError("the executor was shut down")
            heapq.heappush(self._queue, (due, next(self._order), future, call))
            if len(self._threads) < self.workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._ready.notify()
        return future

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._shutdown:
                    self._ready.wait()
                if not self._queue:
                    return
                _, _, future, call = heapq.heappop(self._queue)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._ready:
            self._shutdown = True
            if cancel_futures:
                for _, _, future, _ in self._queue:
                    future.cancel()
                self._queue.clear()
            self._ready.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()


async def iterate_in_thread(
    produce: Callable[[threading.Event], Iterable[AudioChunk]],
    *,
    queue_size: int = 8,
    executor: Executor | None = None,
) -> AsyncIterator[AudioChunk]:
    """Run a blocking chunk generator on a worker thread and yield its chunks here.

    Local engines (Piper, XTTS) are CPU-bound and would freeze every socket
    if run on the event loop. ``produce`` gets a stop event it should check
    between chunks: closing this iterator sets it, so a cancelled sentence
    stops costing CPU after the chunk in progress. The bounded queue keeps a
    slow consumer from buffering a whole paragraph of audio. ``executor``
    (default: the loop's) runs it; a :class:`PriorityExecutor` runs a
    reply's first audio (:data:`first_audio`) ahead of queued later sentences.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(queue_size)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> None:
        if stop.is_set() or loop.is_closed():
            return  # the consumer is gone: nothing to hand over
        put_item = queue.put(item)
        try:
            future = asyncio.run_coroutine_threadsafe(put_item, loop)
        except RuntimeError:  # the loop closed meanwhile
            put_item.close()
            return
        # Blocks the worker (not the loop) while the queue is full.
        while not stop.is_set():
            try:
                future.result(timeout=0.1)
                return
            except TimeoutError:
                continue
        future.cancel()

    def work() -> None:
        if stop.is_set():
            return  # queued behind others and abandoned meanwhile: no CPU for it
        try:
            for chunk in produce(stop):
                if stop.is_set():
                    break
                put(chunk)
            put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    if isinstance(executor, PriorityExecutor) and first_audio.get():
        worker = asyncio.wrap_future(executor.submit_first(work), loop=loop)
    else:
        worker = loop.run_in_executor(executor, work)
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
            worker.cancel()  # a job still queued never starts; a running one sees `stop`
            worker.add_done_callback(_ignore_result)
        else:
            with contextlib.suppress(BaseException):
                worker.result()


def _ignore_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
