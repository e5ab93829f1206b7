"""Job runner on Redis with SAQ: any replica enqueues, ``salon worker`` processes run jobs.

Jobs are SAQ jobs whose function name is the job kind and whose only keyword
argument is ``args``; the job id is the SAQ key. Statuses, progress and results
live in SAQ's job records in Redis (kept ``result_ttl`` seconds after the job
ends), so any replica can answer ``status``. Progress is written to the job
record *and* passed to the ``on_event`` hook in the worker process, which is
how progress reaches conversations on every replica (the hook appends to the
shared event log; this module does not know about it).

Failure semantics:

- a handler that raises or times out fails the job at once with a one-line
  message (no retry: running it again would most likely fail the same way);
- a worker that stops gracefully gives running jobs ``grace_seconds``, then
  cancels them and SAQ puts them back in the queue for another worker;
- a worker that dies (SIGKILL, lost host) leaves its jobs "active"; SAQ's sweep
  on any live worker requeues them once their timeout has passed (``retries``
  attempts in all).

``saq`` and ``redis`` are imported here only: install the ``redis`` extra.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

import structlog

from media.jobs.base import (
    DEFAULT_TIMEOUT_SECONDS,
    JobContext,
    JobFailed,
    JobRunner,
    JobRunnerUnavailable,
    JobState,
    JobStatus,
    OnEvent,
    is_valid_job_id,
)

if TYPE_CHECKING:
    from saq.job import Job
    from saq.queue.redis import RedisQueue
    from saq.worker import Worker

log = structlog.get_logger(__name__)

MISSING_EXTRA = (
    "the Redis job runner needs the 'redis' extra (saq, redis): "
    "pip install 'salon[redis]', or unset SALON_REDIS_URL to run jobs in-process"
)

_STATES: dict[str, JobState] = {
    "new": "queued",
    "queued": "queued",
    "active": "running",
    "complete": "done",
    "failed": "failed",
    "aborting": "cancelled",
    "aborted": "cancelled",
}

SWEPT_MESSAGE = "the worker running this job stopped responding"

# A worker polls for jobs at most this long at a time, so a stop request is seen quickly.
_DEQUEUE_TIMEOUT = 1.0


def _import_saq() -> tuple[Any, Any, Any]:
    try:
        from saq.job import Job
        from saq.queue.redis import RedisQueue
        from saq.worker import Worker
    except ImportError as exc:
        raise RuntimeError(MISSING_EXTRA) from exc
    except Exception as exc:  # saq raises MissingDependencyError when redis is absent
        if type(exc).__name__ == "MissingDependencyError":
            raise RuntimeError(MISSING_EXTRA) from exc
        raise
    return Job, RedisQueue, Worker


_SWEEP_SCRIPT = """
local id_jobs = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SETEX', KEYS[1], ARGV[1], 1)
    for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
        id_jobs[i] = {v, redis.call('GET', v)}
    end
end
return id_jobs
"""

_queue_class: Any = None


def _safe_queue_class() -> Any:
    """SAQ's RedisQueue with a sweep that does not race a worker's dequeue.

    SAQ 0.26.4 sweeps every job in the "active" list whose status is not ACTIVE. A
    worker moves a job into that list (BLMOVE) a moment *before* it marks it ACTIVE,
    so a sweep in between aborts a healthy job and, once that job completes, retries
    it: the job runs twice (tobymao/saq#277, #124; reproduced here at worker start).
    This sweep (same lock, same Lua script, same abort/retry calls) instead:

    - sweeps a job still marked queued in the active list only when an earlier sweep,
      at least one sweep interval before, already saw it so (its worker died between
      the two steps); the first sightings are kept in a Redis hash;
    - sweeps an ACTIVE job only when it is stuck (past its timeout: its worker died);
    - never retries a job that completed while it was being aborted.
    """
    global _queue_class
    if _queue_class is not None:
        return _queue_class
    from saq.job import TERMINAL_STATUSES, Status
    from saq.utils import millis, now

    _, redis_queue, _ = _import_saq()

    class SafeRedisQueue(redis_queue):  # type: ignore[misc, valid-type]
        async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
            script: Any = getattr(self, "_cleanup_script", None)
            if script is None:
                script = self._cleanup_script = self.redis.register_script(_SWEEP_SCRIPT)
            id_jobs = await script(keys=[self._sweep, self._active], args=[lock], client=self.redis)
            if not id_jobs:
                return []  # the lock is held: another worker sweeps this round
            handoff_key = self.namespace("handoff")
            seen = {k: int(v) for k, v in (await self.redis.hgetall(handoff_key)).items()}
            current = now()
            waiting: dict[bytes, int] = {}
            swept: list[bytes] = []
            for job_id, job_bytes in id_jobs:
                job = self.deserialize(job_bytes)
                if job is None:
                    swept.append(job_id)
                    async with self.redis.pipeline(transaction=True) as pipe:
                        await (
                            pipe.lrem(self._active, 0, job_id)
                            .zrem(self._incomplete, job_id)
                            .execute()
                        )
                    continue
                if job.status in (Status.NEW, Status.QUEUED):
                    first = seen.get(job_id)
                    if first is None or current - first < millis(lock):
                        waiting[job_id] = first or current
                        continue
                elif job.status == Status.ABORTING or (
                    job.status == Status.ACTIVE and not job.stuck
                ):
                    continue
                elif job.status in TERMINAL_STATUSES:
                    await self.redis.lrem(self._active, 0, job_id)
                    continue
                swept.append(job_id)
                log.warning("job_swept", job_id=job.key, status=str(job.status.value))
                await self.abort(job, error=self.swept_error_message)
                try:
                    await job.refresh(abort)
                except (TimeoutError, RuntimeError):
                    pass  # its worker is gone: nobody acknowledges the abort
                if job.status == Status.COMPLETE:
                    continue
                if job.retryable:
                    await self.retry(job, error=self.swept_error_message)
                else:
                    await self.finish(job, Status.ABORTED, error=self.swept_error_message)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(handoff_key)
                if waiting:
                    pipe.hset(handoff_key, mapping=waiting)
                    pipe.expire(handoff_key, max(60, lock * 3))
                await pipe.execute()
            return [job_id.decode() for job_id in swept]

    _queue_class = SafeRedisQueue
    return _queue_class


def _redis_client(url: str) -> Any:
    """A client that rides out a Redis restart: short retries with backoff on
    connection errors (bytes replies, as SAQ expects; no socket timeout, since
    workers block on BLMOVE)."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError, TimeoutError

    return Redis.from_url(
        url,
        socket_connect_timeout=2,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[ConnectionError, TimeoutError],
    )


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError)


class SaqJobRunner(JobRunner):
    """Jobs in Redis through SAQ.

    ``serve_concurrency > 0`` also runs that many jobs inside the server process
    (``start()``); by default a server only enqueues and ``salon worker`` runs jobs.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        on_event: OnEvent | None = None,
        concurrency: int = 4,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        grace_seconds: float = 10.0,
        queue_name: str = "salon",
        result_ttl: int = 86_400,
        retries: int = 2,
        serve_concurrency: int = 0,
        sweep_seconds: int = 60,
    ) -> None:
        super().__init__(
            on_event=on_event, concurrency=concurrency, timeout=timeout, grace_seconds=grace_seconds
        )
        _import_saq()  # fail at construction, with the extra's name, not on the first job
        self.redis_url = redis_url
        self.queue_name = queue_name
        self.result_ttl = result_ttl
        self.retries = max(1, retries)
        self.serve_concurrency = serve_concurrency
        self.sweep_seconds = sweep_seconds
        self._queue: RedisQueue | None = None
        self._stop = asyncio.Event()
        self._runs: set[asyncio.Task[Any]] = set()
        self._embedded: asyncio.Task[None] | None = None

    # -- connection -------------------------------------------------------------

    async def _connected(self) -> RedisQueue:
        if self._queue is None:
            queue: RedisQueue = _safe_queue_class()(
                _redis_client(self.redis_url),
                name=self.queue_name,
                swept_error_message=SWEPT_MESSAGE,
            )
            await queue.connect()
            self._queue = queue
        return self._queue

    async def start(self) -> None:
        await self._connected()
        if self.serve_concurrency > 0 and self._embedded is None:
            self._embedded = asyncio.create_task(self.run_worker(self.serve_concurrency))

    async def ping(self) -> None:
        queue = await self._connected()
        await queue.redis.ping()

    # -- the API ----------------------------------------------------------------

    async def enqueue(self, kind: str, args: dict[str, Any], *, job_id: str | None = None) -> str:
        registration = self._registration(kind)
        args = self._json_object(args, "job arguments")
        jid = self._new_job_id(job_id)
        job_cls, _, _ = _import_saq()
        job = job_cls(
            function=kind,
            kwargs={"args": args},
            key=jid,
            # SAQ's own limit is a backstop (and what its sweep uses to spot jobs of dead
            # workers); the handler's timeout fires first with a clear message.
            timeout=math.ceil(registration.timeout) + 2,
            retries=self.retries,
            ttl=self.result_ttl,
        )
        try:
            queue = await self._connected()
            await queue.enqueue(job)  # None when already queued: the same id, a no-op
        except _redis_errors() as exc:
            raise JobRunnerUnavailable(f"the job queue (Redis) is unreachable: {exc}") from exc
        return jid

    async def status(self, job_id: str) -> JobStatus | None:
        if not is_valid_job_id(job_id):
            return None
        try:
            queue = await self._connected()
            job = await queue.job(job_id)
        except _redis_errors() as exc:
            raise JobRunnerUnavailable(f"the job queue (Redis) is unreachable: {exc}") from exc
        if job is None:
            return None
        state = _STATES.get(str(job.status.value), "queued")
        result = job.result if state == "done" and isinstance(job.result, dict) else None
        return JobStatus(
            id=job.key,
            kind=job.function,
            state=state,
            progress=float(job.progress or 0.0),
            result=result,
            error=_error_of(job) if state in ("failed", "cancelled") else None,
            args=dict((job.kwargs or {}).get("args") or {}),
        )

    # -- the worker -------------------------------------------------------------

    async def run_worker(self, concurrency: int | None = None) -> None:
        _, _, worker_cls = _import_saq()
        queue = await self._connected()
        started = asyncio.Event()

        async def on_startup(_ctx: Any) -> None:
            started.set()

        worker: Worker = worker_cls(
            queue,
            [(kind, self._saq_function(kind)) for kind in self._handlers],
            concurrency=concurrency or self.concurrency,
            dequeue_timeout=_DEQUEUE_TIMEOUT,
            startup=on_startup,
            after_process=self._after_process,
            timers={"sweep": self.sweep_seconds},
            shutdown_grace_period_s=math.ceil(self.grace_seconds),
        )
        worker.SIGNALS = []  # the process that runs us owns its signals (see `salon worker`)
        me = asyncio.current_task()
        if me is not None:
            self._runs.add(me)
        running = asyncio.create_task(worker.start(), name="salon-saq-worker")
        stop = asyncio.create_task(self._stop.wait())
        graceful = False
        try:
            await asyncio.wait({running, stop}, return_when=asyncio.FIRST_COMPLETED)
            graceful = True
        finally:
            stop.cancel()
            await self._stop_worker(worker, running, started, graceful=graceful)
            if me is not None:
                self._runs.discard(me)
        if running.done() and not running.cancelled() and running.exception() is not None:
            raise RuntimeError("the job worker stopped unexpectedly") from running.exception()
        log.info("job_worker_stopped", queue=self.queue_name)

    async def _stop_worker(
        self, worker: Worker, running: asyncio.Task[None], started: asyncio.Event, *, graceful: bool
    ) -> None:
        if running.done():
            return
        if not started.is_set():
            # Worker.start() replaces its stop event before calling startup: let it get there.
            waiter = asyncio.ensure_future(started.wait())
            await asyncio.wait({running, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if running.done():
                return
        worker.event.set()  # no more dequeues; Worker.start() now runs Worker.stop()
        for task in list(worker.tasks):
            # Upkeep loops sleep up to a minute; cancelled now, Worker.stop() waits only for
            # jobs (grace period), then cancels what still runs: SAQ requeues those jobs.
            if task.get_name() != "process" or not graceful:
                task.cancel()
        await asyncio.gather(running, return_exceptions=True)

    def request_stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        self.request_stop()
        current = asyncio.current_task()
        runs = [t for t in self._runs if t is not current]
        if self._embedded is not None and self._embedded is not current:
            runs.append(self._embedded)
        if runs:
            await asyncio.gather(*runs, return_exceptions=True)
        if self._queue is not None:
            queue, self._queue = self._queue, None
            try:
                await queue.disconnect()
            except Exception:  # closing must not fail because Redis already went away
                log.warning("job_queue_disconnect_failed", exc_info=True)

    # -- inside the worker ------------------------------------------------------

    def _saq_function(self, kind: str) -> Any:
        async def run(saq_ctx: Any, *, args: dict[str, Any]) -> dict[str, Any]:
            job: Job = saq_ctx["job"]
            registration = self._handlers[kind]
            if isinstance(job.result, dict) and job.attempts > 1:
                # A previous attempt already completed (a requeue raced its end): its
                # result stands; running the handler again would repeat its effects.
                return job.result

            async def report(fraction: float, info: dict[str, Any]) -> None:
                try:
                    await job.update(progress=fraction)
                except _redis_errors():  # progress is advisory: never fail a job over it
                    log.warning("job_progress_not_stored", job_id=job.key, exc_info=True)
                await self._emit("progress", _payload(job, info=info))

            try:
                return await self._call(registration, JobContext(job.key, kind, report), args)
            except JobFailed as exc:
                job.meta["error"] = str(exc)
                # A handler's failure is final; SAQ's retries are for jobs of dead workers.
                job.retries = job.attempts
                raise

        run.__qualname__ = run.__name__ = f"salon_job[{kind}]"
        return run

    async def _after_process(self, saq_ctx: Any) -> None:
        """Runs after SAQ stored the outcome, so a client told "done" finds the result."""
        job: Job | None = saq_ctx.get("job")
        if job is None or job.function not in self._handlers:
            return
        status = str(job.status.value)
        if status == "complete":
            await self._emit("done", _payload(job, result=job.result))
        elif status == "failed":
            await self._emit("failed", _payload(job, error=_error_of(job)))


def _payload(job: Job, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": job.key,
        "kind": job.function,
        "args": dict((job.kwargs or {}).get("args") or {}),
        "progress": float(job.progress or 0.0),
        "state": _STATES.get(str(job.status.value), "running"),
        **extra,
    }


def _error_of(job: Job) -> str:
    """Our one-line message, else the last line of SAQ's traceback (e.g. "swept")."""
    message = job.meta.get("error") if isinstance(job.meta, dict) else None
    if isinstance(message, str) and message:
        return message
    lines = [line for line in (job.error or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "job failed"
