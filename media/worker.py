"""Run a generator's CPU work in a thread, with real progress and prompt cancellation.

Video frames, diffusion steps and avatar build stages are CPU (or GPU) work
that must not block the event loop (media/generation.py). The work function
runs in the loop's default executor and receives a :class:`StepReporter`:
``report(fraction, **info)`` queues a progress report for the loop, and
raises :class:`WorkCancelled` once the awaiting task has been cancelled, so
the thread stops at its next step instead of finishing a clip nobody wants.

Video generators and the avatar builder use it; the image generators have
their own single-worker executors (one loaded pipeline each).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from media.generation import Progress, no_progress

T = TypeVar("T")

_DONE = object()


class WorkCancelled(Exception):
    """Raised inside the worker thread when the awaiting task was cancelled."""


class StepReporter:
    """The worker thread's handle: report progress, notice cancellation.

    Fractions are clamped to 0..1 and never go backwards, so a caller that
    maps stages onto sub-ranges cannot make the bar jump back.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        self._loop = loop
        self._queue = queue
        self._cancel = threading.Event()
        self._last = 0.0

    @property
    def cancelled(self) -> bool:
        """True once the task awaiting this work has been cancelled."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the work to stop at its next :meth:`check` or :meth:`report`."""
        self._cancel.set()

    def check(self) -> None:
        """Raise :class:`WorkCancelled` when the work should stop."""
        if self._cancel.is_set():
            raise WorkCancelled

    def report(self, fraction: float, **info: Any) -> None:
        """Queue ``progress(fraction, **info)`` for the event loop; stop if cancelled."""
        self.check()
        fraction = min(1.0, max(self._last, float(fraction)))
        self._last = fraction
        self._put((fraction, info))

    def scaled(self, start: float, end: float) -> Callable[..., None]:
        """A ``report`` that maps 0..1 onto ``start..end`` (one stage of several)."""

        def report(fraction: float, **info: Any) -> None:
            self.report(start + (end - start) * min(1.0, max(0.0, fraction)), **info)

        return report

    def _put(self, item: Any) -> None:
        # The loop may already be closed when a cancelled thread winds down.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)


async def run_in_thread(work: Callable[[StepReporter], T], progress: Progress = no_progress) -> T:
    """Run ``work(reporter)`` in a thread, forwarding its reports to ``progress`` in order.

    When the awaiting task is cancelled, the reporter is flagged, and this
    waits for the thread to reach its next step and return (so a cancelled
    clip does not keep a core, an ffmpeg process or GPU memory busy behind
    the next job) before re-raising the cancellation.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    reporter = StepReporter(loop, queue)

    def run() -> T:
        try:
            return work(reporter)
        finally:
            reporter._put(_DONE)

    future = loop.run_in_executor(None, run)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            fraction, info = item
            await progress(fraction, **info)
        return await future
    except BaseException:
        reporter.cancel()
        if not future.done():
            # The thread stops at its next step; a second cancel stops the wait.
            with contextlib.suppress(Exception):
                await asyncio.shield(future)
        raise
