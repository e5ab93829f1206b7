"""In-process job runner: the embedded default (``salon serve`` with no Redis).

Jobs run as asyncio tasks of the server process, at most ``concurrency`` at a
time; statuses are kept in memory, bounded (the oldest finished ones are
forgotten first). Nothing survives a restart: jobs still queued or running at
shutdown end ``cancelled`` and the ``on_event`` hook hears of it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from media.jobs.base import (
    DEFAULT_TIMEOUT_SECONDS,
    TERMINAL_STATES,
    JobContext,
    JobFailed,
    JobRunner,
    JobRunnerUnavailable,
    JobState,
    JobStatus,
    OnEvent,
    is_valid_job_id,
)

CANCELLED_MESSAGE = "cancelled: the server stopped before the job finished"


@dataclass
class _Job:
    id: str
    kind: str
    args: dict[str, Any]
    state: JobState = "queued"
    progress: float = 0.0
    result: dict[str, Any] | None = None
    error: str | None = None

    def payload(self, **extra: Any) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "kind": self.kind,
            "args": dict(self.args),
            "progress": self.progress,
            "state": self.state,
            **extra,
        }


class InProcessJobRunner(JobRunner):
    def __init__(
        self,
        *,
        on_event: OnEvent | None = None,
        concurrency: int = 4,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        grace_seconds: float = 10.0,
        max_jobs: int = 10_000,
        max_queued: int = 10_000,
    ) -> None:
        super().__init__(
            on_event=on_event, concurrency=concurrency, timeout=timeout, grace_seconds=grace_seconds
        )
        self.max_jobs = max_jobs
        self.max_queued = max_queued
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._workers: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._draining = False
        self._closed = False

    # -- the API --------------------------------------------------------------

    async def enqueue(self, kind: str, args: dict[str, Any], *, job_id: str | None = None) -> str:
        self._registration(kind)
        args = self._json_object(args, "job arguments")
        jid = self._new_job_id(job_id)
        existing = self._jobs.get(jid)
        if existing is not None and existing.state not in TERMINAL_STATES:
            return jid
        if self._closed:
            raise JobRunnerUnavailable("the job runner is shut down")
        if self._queue.qsize() >= self.max_queued:
            raise JobRunnerUnavailable(f"the job queue is full ({self.max_queued} jobs waiting)")
        self._jobs[jid] = _Job(jid, kind, args)
        self._jobs.move_to_end(jid)
        self._forget_old()
        self._queue.put_nowait(jid)
        return jid

    async def status(self, job_id: str) -> JobStatus | None:
        job = self._jobs.get(job_id) if is_valid_job_id(job_id) else None
        if job is None:
            return None
        return JobStatus(
            id=job.id,
            kind=job.kind,
            state=job.state,
            progress=job.progress,
            result=dict(job.result) if job.result is not None else None,
            error=job.error,
            args=dict(job.args),
        )

    async def start(self) -> None:
        self._spawn(self.concurrency)

    async def run_worker(self, concurrency: int | None = None) -> None:
        self._spawn(concurrency or self.concurrency)
        try:
            await self._stop.wait()
        finally:
            await self._drain(graceful=not _cancelling())

    def request_stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        self._closed = True
        self.request_stop()
        await self._drain(graceful=True)
        # Nothing in memory survives the process: say so to whoever waits for these.
        for job in list(self._jobs.values()):
            if job.state == "queued":
                job.state, job.error = "cancelled", CANCELLED_MESSAGE
                await self._emit("failed", job.payload(error=job.error))

    # -- workers --------------------------------------------------------------

    def _spawn(self, n: int) -> None:
        if self._workers or self._closed:
            return
        self._draining = False
        for i in range(n):
            task = asyncio.create_task(self._work(), name=f"salon-job-worker-{i}")
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _work(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        while not self._draining:
            jid = await self._queue.get()
            job = self._jobs.get(jid)
            if job is None or job.state != "queued":
                continue  # forgotten, or re-enqueued under the same id while queued
            if self._draining:
                self._queue.put_nowait(jid)  # leave it for whoever runs next
                return
            self._busy.add(me)
            try:
                await self._run(job)
            finally:
                self._busy.discard(me)

    async def _run(self, job: _Job) -> None:
        registration = self._handlers[job.kind]
        job.state = "running"

        async def report(fraction: float, info: dict[str, Any]) -> None:
            job.progress = fraction
            await self._emit("progress", job.payload(info=info))

        try:
            result = await self._call(
                registration, JobContext(job.id, job.kind, report), dict(job.args)
            )
        except JobFailed as exc:
            job.state, job.error = "failed", str(exc)
            await self._emit("failed", job.payload(error=job.error))
        except asyncio.CancelledError:
            job.state, job.error = "cancelled", CANCELLED_MESSAGE
            await self._emit("failed", job.payload(error=job.error))
            raise
        else:
            job.state, job.progress, job.result = "done", 1.0, result
            await self._emit("done", job.payload(result=dict(result)))

    async def _drain(self, *, graceful: bool) -> None:
        """No new jobs; running ones get ``grace_seconds`` (if graceful), then are cancelled."""
        self._draining = True
        busy = set(self._busy)
        if graceful and busy:
            await asyncio.wait(busy, timeout=self.grace_seconds)
        workers = set(self._workers)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    def _forget_old(self) -> None:
        """Bound memory: drop the oldest finished jobs beyond ``max_jobs``."""
        excess = len(self._jobs) - self.max_jobs
        if excess <= 0:
            return
        for jid in [j.id for j in self._jobs.values() if j.state in TERMINAL_STATES][:excess]:
            del self._jobs[jid]


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
