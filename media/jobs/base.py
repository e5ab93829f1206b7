"""Job runner base: run named background jobs, report progress, keep their status.

A *job* is a kind (``"conversation.export"``), JSON arguments and an async
handler registered under that kind. Every process that enqueues or runs jobs
registers the same handlers: enqueueing an unregistered kind fails at once, so
a typo never sits in a queue. Handlers report progress through their
:class:`JobContext`; the runner stores it in the job's status and hands it to
the ``on_event`` hook, which is how the layer above turns job progress into
conversation events without the runner knowing about conversations.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

log = structlog.get_logger(__name__)

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled"})

JobEventName = Literal["progress", "done", "failed"]
OnEvent = Callable[[str, dict[str, Any]], Awaitable[None]]
"""``on_event(name, payload)``: ``name`` is ``"progress"``, ``"done"`` or ``"failed"``; the
payload has ``job_id``, ``kind``, ``args``, ``progress`` and, by name, ``info`` (the keywords
given to :meth:`JobContext.progress`), ``result`` or ``error`` (and ``state``)."""

Handler = Callable[["JobContext", dict[str, Any]], Awaitable[dict[str, Any]]]
"""``async handler(ctx, args) -> result``; ``args`` and the result are JSON objects."""

DEFAULT_TIMEOUT_SECONDS = 300.0
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class JobError(Exception):
    """Base of the errors a runner raises to its caller."""


class UnknownJobKind(JobError, ValueError):
    """``enqueue`` named a kind that no handler is registered for in this process."""


class InvalidJob(JobError, ValueError):
    """Arguments that are not a JSON object, or a malformed ``job_id``."""


class JobRunnerUnavailable(JobError):
    """The queue backend cannot be reached (or the in-process queue is full)."""


class JobFailed(Exception):
    """Raised inside a runner to fail a job with exactly this message."""


@dataclass(frozen=True)
class JobStatus:
    """Where a job stands. ``args`` is kept so callers can check who may see it."""

    id: str
    kind: str
    state: JobState
    progress: float = 0.0
    result: dict[str, Any] | None = None
    error: str | None = None
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class JobContext:
    """What a handler gets besides its arguments: its id, its kind, a progress reporter."""

    def __init__(
        self,
        job_id: str,
        kind: str,
        report: Callable[[float, dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.job_id = job_id
        self.kind = kind
        self._report = report

    async def progress(self, fraction: float, **info: Any) -> None:
        """Record progress (clamped to 0..1) and pass it to the runner's ``on_event`` hook.

        ``info`` (JSON values) travels with the event, e.g. ``done=120, total=300``.
        Awaited in order, so the hook sees a job's progress in the order reported.
        """
        await self._report(min(1.0, max(0.0, float(fraction))), info)


@dataclass(frozen=True)
class _Registration:
    handler: Handler
    timeout: float


class JobRunner(ABC):
    """One implementation per backend: in-process (embedded default), SAQ on Redis.

    Lifecycle: ``register`` handlers, then ``start()`` (a server: run embedded
    workers, or just connect), or ``run_worker()`` (a dedicated worker process;
    blocks until :meth:`request_stop` or cancellation), and ``close()`` at the end.
    """

    def __init__(
        self,
        *,
        on_event: OnEvent | None = None,
        concurrency: int = 4,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        grace_seconds: float = 10.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.on_event = on_event
        self.concurrency = concurrency
        self.default_timeout = timeout
        self.grace_seconds = grace_seconds
        self._handlers: dict[str, _Registration] = {}

    # -- handlers -------------------------------------------------------------

    def register(self, kind: str, handler: Handler, *, timeout: float | None = None) -> None:
        """Run ``handler`` for jobs of ``kind``; ``timeout`` (seconds) overrides the default."""
        if not kind or not isinstance(kind, str):
            raise ValueError("a job kind is a non-empty string")
        limit = self.default_timeout if timeout is None else timeout
        if limit <= 0:
            raise ValueError("a job timeout must be positive")
        self._handlers[kind] = _Registration(handler, float(limit))

    @property
    def kinds(self) -> list[str]:
        return sorted(self._handlers)

    # -- the API --------------------------------------------------------------

    @abstractmethod
    async def enqueue(self, kind: str, args: dict[str, Any], *, job_id: str | None = None) -> str:
        """Queue a job and return its id.

        Raises :class:`UnknownJobKind` for an unregistered kind, :class:`InvalidJob`
        for arguments that are not a JSON object, :class:`JobRunnerUnavailable` when
        the backend is down. While a job with ``job_id`` is queued or running,
        enqueueing the same id again does nothing and returns it.
        """

    @abstractmethod
    async def status(self, job_id: str) -> JobStatus | None:
        """The job's status, or None if unknown (never existed, or expired)."""

    async def start(self) -> None:
        """Get ready to enqueue (and, where this runner runs jobs in the server, start workers)."""

    @abstractmethod
    async def run_worker(self, concurrency: int | None = None) -> None:
        """Run jobs until :meth:`request_stop` (graceful) or cancellation; what ``salon worker`` runs."""

    @abstractmethod
    def request_stop(self) -> None:
        """Ask :meth:`run_worker` to return: take no new jobs, let running ones finish for
        ``grace_seconds``, then cancel them (a queue backend puts them back in the queue).
        Safe to call from a signal handler."""

    async def ping(self) -> None:
        """Raise if the backend cannot be reached."""

    async def close(self) -> None:
        """Stop workers (as :meth:`request_stop`) and release connections."""

    # -- shared by implementations ---------------------------------------------

    def _registration(self, kind: str) -> _Registration:
        registration = self._handlers.get(kind)
        if registration is None:
            known = ", ".join(self.kinds) or "none"
            raise UnknownJobKind(f"unknown job kind {kind!r} (registered: {known})")
        return registration

    @staticmethod
    def _new_job_id(job_id: str | None) -> str:
        if job_id is None:
            return f"job_{uuid.uuid4().hex}"
        if not is_valid_job_id(job_id):
            raise InvalidJob(
                "job_id must be 1-128 characters of letters, digits, '_', '.', '-' "
                "starting with a letter or digit"
            )
        return job_id

    @staticmethod
    def _json_object(value: Any, what: str) -> dict[str, Any]:
        """A deep copy through JSON, so every backend sees exactly what Redis would store."""
        if not isinstance(value, dict):
            raise InvalidJob(f"{what} must be a JSON object, not {type(value).__name__}")
        try:
            copied: dict[str, Any] = json.loads(json.dumps(value))
        except (TypeError, ValueError) as exc:
            raise InvalidJob(f"{what} must be JSON-serializable: {exc}") from exc
        return copied

    async def _call(
        self, registration: _Registration, ctx: JobContext, args: dict[str, Any]
    ) -> dict[str, Any]:
        """Run a handler under its timeout; any failure becomes :class:`JobFailed`.

        Cancellation (shutdown) is not a failure and propagates.
        """
        try:
            async with asyncio.timeout(registration.timeout) as deadline:
                result = await registration.handler(ctx, args)
        except TimeoutError as exc:
            if deadline.expired():
                raise JobFailed(
                    f"job {ctx.kind} timed out after {registration.timeout:g} s"
                ) from exc
            raise JobFailed(error_message(exc)) from exc
        except JobFailed:
            raise
        except Exception as exc:
            log.warning("job_failed", job_id=ctx.job_id, kind=ctx.kind, exc_info=True)
            raise JobFailed(error_message(exc)) from exc
        try:
            return self._json_object(result, "a job result")
        except InvalidJob as exc:
            raise JobFailed(str(exc)) from exc

    async def _emit(self, name: JobEventName, payload: dict[str, Any]) -> None:
        """Call the hook; its failures are logged, never fail the job or the worker."""
        if self.on_event is None:
            return
        try:
            await self.on_event(name, payload)
        except Exception:
            log.exception("job_event_hook_failed", job_event=name, job_id=payload.get("job_id"))


def is_valid_job_id(job_id: str) -> bool:
    return isinstance(job_id, str) and _JOB_ID.match(job_id) is not None


def error_message(exc: BaseException) -> str:
    """A one-line, human-readable reason for a failed job."""
    if isinstance(exc, JobFailed):
        return str(exc)
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
