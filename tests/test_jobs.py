"""Jobs: the JobRunner contract over every backend, media storage, the conversation export
end to end, the jobs HTTP API, and a real worker process stopped by SIGTERM.

The Redis backend runs against a real ``redis-server`` started here on a free
loopback port and stopped by its pid. It is never skipped: a missing binary
fails the test with a message saying what to install.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from agents.jobs import EXPORT_KIND, export_key, job_event_hook, register_conversation_jobs
from agents.personas import create_persona
from media.jobs import (
    InProcessJobRunner,
    InvalidJob,
    JobContext,
    JobRunner,
    JobStatus,
    UnknownJobKind,
    create_job_runner,
)
from media.jobs.saq_runner import SaqJobRunner
from media.storage import InvalidKey, LocalMediaStorage
from memory.db import create_engine, normalize_database_url
from memory.eventlog import InProcessEventLog
from memory.migrate import migrate
from memory.store import Store
from server import jobs_api
from server.auth import SessionTokens
from server.http_util import HTTPError, error_response
from tests.fakes.openai_server import free_port
from tests.services_redis import RedisServer

BACKENDS = ["inprocess", "redis"]
# saq 0.26.4 calls redis-py's setex, deprecated in redis 8; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
ROOT = Path(__file__).resolve().parent.parent

Events = list[tuple[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own: these tests use SAQ's default queue too."""
    server = RedisServer(tmp_path_factory.mktemp("jobs-redis")).start()
    try:
        yield server
    finally:
        server.stop()


# -- a job system: who enqueues, who runs ------------------------------------------------


class JobSystem:
    """``client`` enqueues and reads statuses; ``worker`` runs the jobs and owns the hook.

    In-process they are one runner. With Redis they are two runner instances with
    their own connections, the worker in ``run_worker()`` like ``salon worker``: what
    one enqueues, the other runs.
    """

    def __init__(self, backend: str, redis_url: str | None) -> None:
        self.backend = backend
        self.redis_url = redis_url
        self.queue_name = f"test-{uuid.uuid4().hex[:8]}"
        self.events: Events = []
        self.handlers: list[tuple[str, Any, float | None]] = []
        self.setups: list[Callable[[JobRunner], None]] = []
        self.client: JobRunner | None = None
        self.worker: JobRunner | None = None
        self._worker_task: asyncio.Task[None] | None = None

    async def on_event(self, name: str, payload: dict[str, Any]) -> None:
        self.events.append((name, payload))

    def register(self, kind: str, handler: Any, *, timeout: float | None = None) -> None:
        self.handlers.append((kind, handler, timeout))

    def _runner(self, on_event: Any, concurrency: int) -> JobRunner:
        options: dict[str, Any] = {"grace_seconds": 1.0}
        if self.redis_url:
            options["queue_name"] = self.queue_name
        runner = create_job_runner(
            self.redis_url, on_event=on_event, concurrency=concurrency, **options
        )
        for kind, handler, timeout in self.handlers:
            runner.register(kind, handler, timeout=timeout)
        for setup in self.setups:
            setup(runner)
        return runner

    async def start(self, *, concurrency: int = 4, hook: Any = None) -> JobSystem:
        """Start; ``hook`` is called after the event is recorded in ``self.events``."""

        async def on_event(name: str, payload: dict[str, Any]) -> None:
            await self.on_event(name, payload)
            if hook is not None:
                await hook(name, payload)

        if self.backend == "inprocess":
            self.client = self.worker = self._runner(on_event, concurrency)
            await self.client.start()
            return self
        self.client = self._runner(None, concurrency)
        await self.client.start()
        self.worker = self._runner(on_event, concurrency)
        self._worker_task = asyncio.create_task(self.worker.run_worker(concurrency))
        return self

    async def close(self) -> None:
        if self.worker is not None and self.worker is not self.client:
            self.worker.request_stop()
        if self._worker_task is not None:
            await asyncio.wait_for(self._worker_task, 20)
        for runner in {id(r): r for r in (self.worker, self.client) if r}.values():
            await runner.close()

    async def enqueue(self, kind: str, args: dict[str, Any], **kw: Any) -> str:
        assert self.client is not None
        return await self.client.enqueue(kind, args, **kw)

    async def status(self, job_id: str) -> JobStatus | None:
        assert self.client is not None
        return await self.client.status(job_id)

    async def wait(self, job_id: str, timeout: float = 15) -> JobStatus:
        """Poll until the job ends (and the hook heard of it, if it ran)."""
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status(job_id)
            if status is not None and status.finished and self.heard_end(job_id):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not finish: {status}")
            await asyncio.sleep(0.02)

    def heard_end(self, job_id: str) -> bool:
        return any(n in ("done", "failed") and p["job_id"] == job_id for n, p in self.events)

    async def wait_for_log(self, events: InProcessEventLog, conv_id: str, job_id: str) -> JobStatus:
        """Wait for the job, then for its final event in the conversation's log."""
        status = await self.wait(job_id)
        deadline = time.monotonic() + 10
        while not any(
            e.get("job_id") == job_id and e["type"] in ("media.done", "error")
            for e in await events.replay(conv_id, 0)
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        return status

    def of(self, job_id: str) -> Events:
        return [(n, p) for n, p in self.events if p["job_id"] == job_id]


@pytest.fixture(params=BACKENDS)
async def system(request: pytest.FixtureRequest) -> AsyncIterator[JobSystem]:
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    s = JobSystem(request.param, url)
    try:
        yield s
    finally:
        await s.close()


# -- handlers ----------------------------------------------------------------------------


async def echo(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"echo": args, "job_id": ctx.job_id, "kind": ctx.kind}


async def stepper(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
    for i in range(1, args["steps"] + 1):
        await ctx.progress(i / (args["steps"] + 1), step=i)
    return {"steps": args["steps"]}


async def boom(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("the disk is on fire")


async def sleeper(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(args.get("seconds", 30))
    return {"slept": True}


def not_a_dict_result() -> Callable[[JobContext, dict[str, Any]], Awaitable[Any]]:
    async def handler(ctx: JobContext, args: dict[str, Any]) -> Any:
        return ["not", "an", "object"]

    return handler


# -- the JobRunner contract --------------------------------------------------------------


async def test_enqueue_runs_the_job_and_keeps_its_result(system: JobSystem) -> None:
    system.register("test.echo", echo)
    await system.start()
    job_id = await system.enqueue("test.echo", {"x": 1, "who": "ünïcode"})
    assert job_id.startswith("job_")
    status = await system.wait(job_id)
    assert status.state == "done"
    assert status.kind == "test.echo"
    assert status.progress == 1.0
    assert status.error is None
    assert status.result == {
        "echo": {"x": 1, "who": "ünïcode"},
        "job_id": job_id,
        "kind": "test.echo",
    }
    assert status.args == {"x": 1, "who": "ünïcode"}
    (_, payload), *_ = [e for e in system.of(job_id) if e[0] == "done"]
    assert payload["result"] == status.result and payload["args"] == {"x": 1, "who": "ünïcode"}


async def test_progress_reaches_the_hook_in_order_then_done(system: JobSystem) -> None:
    system.register("test.steps", stepper)
    await system.start()
    job_id = await system.enqueue("test.steps", {"steps": 5})
    await system.wait(job_id)
    events = system.of(job_id)
    assert [n for n, _ in events] == ["progress"] * 5 + ["done"]
    fractions = [p["progress"] for n, p in events if n == "progress"]
    assert fractions == pytest.approx([i / 6 for i in range(1, 6)])
    assert [p["info"] for n, p in events if n == "progress"] == [{"step": i} for i in range(1, 6)]
    assert all(p["kind"] == "test.steps" and p["args"] == {"steps": 5} for _, p in events)


async def test_progress_is_visible_in_status_while_running(system: JobSystem) -> None:
    gate = asyncio.Event()

    async def half_then_wait(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
        await ctx.progress(0.5)
        await ctx.progress(7)  # clamped to 1.0
        await ctx.progress(0.5)
        await gate.wait()
        return {}

    system.register("test.half", half_then_wait)
    await system.start()
    job_id = await system.enqueue("test.half", {})
    deadline = time.monotonic() + 10
    while (
        (status := await system.status(job_id)) is None
        or status.state != "running"
        or (status.progress != 0.5)
    ):
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.02)
    assert [p["progress"] for n, p in system.of(job_id)] == [0.5, 1.0, 0.5]
    gate.set()
    assert (await system.wait(job_id)).state == "done"


async def test_a_failing_handler_fails_its_job_and_the_worker_goes_on(system: JobSystem) -> None:
    system.register("test.boom", boom)
    system.register("test.echo", echo)
    system.register("test.badresult", not_a_dict_result())
    await system.start(concurrency=1)
    failed = await system.enqueue("test.boom", {})
    bad = await system.enqueue("test.badresult", {})
    after = await system.enqueue("test.echo", {"n": 2})
    status = await system.wait(failed)
    assert status.state == "failed"
    assert status.error == "ValueError: the disk is on fire"
    assert status.result is None
    assert [(n, p["error"]) for n, p in system.of(failed)] == [
        ("failed", "ValueError: the disk is on fire")
    ]
    bad_status = await system.wait(bad)
    assert bad_status.state == "failed"
    assert "a job result must be a JSON object" in (bad_status.error or "")
    ok = await system.wait(after)
    assert ok.state == "done" and ok.result is not None and ok.result["echo"] == {"n": 2}


async def test_a_job_that_overruns_its_timeout_fails_clearly(system: JobSystem) -> None:
    system.register("test.sleep", sleeper, timeout=0.3)
    system.register("test.echo", echo)
    await system.start(concurrency=1)
    started = time.monotonic()
    job_id = await system.enqueue("test.sleep", {"seconds": 30})
    after = await system.enqueue("test.echo", {})
    status = await system.wait(job_id)
    assert status.state == "failed"
    assert status.error == "job test.sleep timed out after 0.3 s"
    assert time.monotonic() - started < 10
    assert (await system.wait(after)).state == "done"


async def test_unknown_kind_is_refused_at_enqueue(system: JobSystem) -> None:
    system.register("test.echo", echo)
    await system.start()
    with pytest.raises(
        UnknownJobKind, match=r"unknown job kind 'test\.nope' \(registered: test\.echo\)"
    ):
        await system.enqueue("test.nope", {})


async def test_bad_arguments_and_ids_are_refused_at_enqueue(system: JobSystem) -> None:
    system.register("test.echo", echo)
    await system.start()
    with pytest.raises(InvalidJob, match="JSON-serializable"):
        await system.enqueue("test.echo", {"when": object()})
    with pytest.raises(InvalidJob, match="JSON object"):
        await system.enqueue("test.echo", ["a", "list"])  # type: ignore[arg-type]
    with pytest.raises(InvalidJob, match="job_id"):
        await system.enqueue("test.echo", {}, job_id="../../etc/passwd")


async def test_status_of_an_unknown_job_is_none(system: JobSystem) -> None:
    system.register("test.echo", echo)
    await system.start()
    assert await system.status("job_" + "0" * 32) is None
    assert await system.status("../../etc/passwd") is None
    assert await system.status("") is None


async def test_a_chosen_job_id_is_used_and_not_queued_twice(system: JobSystem) -> None:
    gate = asyncio.Event()
    runs: list[str] = []

    async def gated(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
        runs.append(ctx.job_id)
        await gate.wait()
        return {"n": len(runs)}

    system.register("test.gated", gated)
    await system.start()
    assert await system.enqueue("test.gated", {}, job_id="export-42") == "export-42"
    assert await system.enqueue("test.gated", {}, job_id="export-42") == "export-42"
    gate.set()
    status = await system.wait("export-42")
    await asyncio.sleep(0.3)
    assert status.state == "done" and runs == ["export-42"]


async def test_concurrency_is_bounded(system: JobSystem) -> None:
    running = 0
    peak = 0

    async def busy(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.1)
        running -= 1
        return {}

    system.register("test.busy", busy)
    await system.start(concurrency=2)
    ids = [await system.enqueue("test.busy", {"i": i}) for i in range(6)]
    for job_id in ids:
        assert (await system.wait(job_id)).state == "done"
    assert peak == 2


async def test_a_hook_that_raises_does_not_fail_the_job(system: JobSystem) -> None:
    async def bad_hook(name: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("hook is broken")

    system.register("test.steps", stepper)
    await system.start(hook=bad_hook)
    job_id = await system.enqueue("test.steps", {"steps": 2})
    status = await system.wait(job_id)
    assert status.state == "done" and status.result == {"steps": 2}


# -- backend specifics -------------------------------------------------------------------


def test_registry_picks_in_process_without_redis() -> None:
    assert isinstance(create_job_runner(None), InProcessJobRunner)
    assert isinstance(create_job_runner("redis://127.0.0.1:1/0"), SaqJobRunner)


def test_redis_runner_without_saq_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "saq.job", None)  # as if saq were not installed
    with pytest.raises(RuntimeError, match=r"needs the 'redis' extra"):
        create_job_runner("redis://127.0.0.1:1/0")


async def test_in_process_close_cancels_what_did_not_finish() -> None:
    events: Events = []

    async def hook(name: str, payload: dict[str, Any]) -> None:
        events.append((name, payload))

    runner = InProcessJobRunner(on_event=hook, concurrency=1, grace_seconds=0.1)
    runner.register("test.sleep", sleeper)
    await runner.start()
    running = await runner.enqueue("test.sleep", {"seconds": 30})
    queued = await runner.enqueue("test.sleep", {"seconds": 30})
    while (s := await runner.status(running)) is None or s.state != "running":
        await asyncio.sleep(0.01)
    await asyncio.wait_for(runner.close(), 5)
    for job_id in (running, queued):
        status = await runner.status(job_id)
        assert status is not None and status.state == "cancelled"
        assert "stopped before the job finished" in (status.error or "")
    assert sorted(p["job_id"] for n, p in events if n == "failed") == sorted([running, queued])


async def test_in_process_status_memory_is_bounded() -> None:
    runner = InProcessJobRunner(max_jobs=3)
    runner.register("test.echo", echo)
    await runner.start()
    ids = []
    for i in range(5):
        ids.append(await runner.enqueue("test.echo", {"i": i}))
        while not (s := await runner.status(ids[-1])) or not s.finished:
            await asyncio.sleep(0.01)
    await runner.close()
    assert [job_id for job_id in ids if await runner.status(job_id) is not None] == ids[2:]


async def test_redis_down_is_a_clear_error() -> None:
    from media.jobs import JobRunnerUnavailable

    runner = SaqJobRunner(f"redis://127.0.0.1:{free_port()}/0", queue_name="down")
    runner.register("test.echo", echo)
    with pytest.raises(JobRunnerUnavailable, match=r"the job queue \(Redis\) is unreachable"):
        await runner.enqueue("test.echo", {})
    await runner.close()


WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, signal, sys
    from media.jobs.saq_runner import SaqJobRunner

    url, queue, log_path = sys.argv[1:4]

    async def hook(name, payload):
        with open(log_path, "a") as f:
            f.write(json.dumps([name, payload["job_id"], payload.get("progress")]) + "\\n")

    async def slow(ctx, args):
        await ctx.progress(0.1)
        await asyncio.sleep(args["seconds"])
        return {"by": "subprocess"}

    async def main():
        runner = SaqJobRunner(
            url, queue_name=queue, on_event=hook, grace_seconds=0.5, sweep_seconds=1
        )
        runner.register("test.slow", slow)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, runner.request_stop)
        print("ready", flush=True)
        await runner.run_worker(2)
        await runner.close()
        print("stopped", flush=True)

    asyncio.run(main())
    """
)


async def test_redis_worker_process_runs_jobs_and_requeues_them_on_sigterm(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A separate worker process runs what this process enqueued; stopped by SIGTERM mid-job
    after its grace period, it puts the job back and another worker finishes it."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    log_path = tmp_path / "events.jsonl"
    client = SaqJobRunner(redis_server.url, queue_name=queue)

    async def slow(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(args["seconds"])
        return {"by": "second worker"}

    client.register("test.slow", slow)
    await client.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, redis_server.url, queue, str(log_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    second: SaqJobRunner | None = None
    try:
        quick = await client.enqueue("test.slow", {"seconds": 0})
        deadline = time.monotonic() + 20
        while (s := await client.status(quick)) is None or s.state != "done":
            assert time.monotonic() < deadline and proc.poll() is None, s
            await asyncio.sleep(0.05)
        assert s.result == {"by": "subprocess"}

        long = await client.enqueue("test.slow", {"seconds": 60})
        while (s := await client.status(long)) is None or s.state != "running":
            assert time.monotonic() < deadline and proc.poll() is None, s
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=15)
        assert proc.returncode == 0, out.decode()
        assert b"stopped" in out
        status = await client.status(long)
        assert status is not None and status.state == "queued", status

        lines = [json.loads(line) for line in log_path.read_text().splitlines()]
        assert [line[0] for line in lines if line[1] == quick] == ["progress", "done"]
        assert [line[0] for line in lines if line[1] == long] == ["progress"]

        # Another worker (here: in this process, with a fast handler) picks it up.
        second = SaqJobRunner(redis_server.url, queue_name=queue)

        async def fast(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
            return {"by": "second worker"}

        second.register("test.slow", fast)
        task = asyncio.create_task(second.run_worker(1))
        deadline = time.monotonic() + 20
        while (s := await client.status(long)) is None or s.state != "done":
            assert time.monotonic() < deadline, s
            await asyncio.sleep(0.05)
        assert s.result == {"by": "second worker"}
        second.request_stop()
        await asyncio.wait_for(task, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if second is not None:
            await second.close()
        await client.close()


async def test_redis_sweep_leaves_a_job_a_worker_just_dequeued(redis_server: RedisServer) -> None:
    """A job in SAQ's active list not yet marked active is a worker's hand-off, not a dead
    job: the first sweep leaves it; only one a full sweep interval later takes it back."""
    queue_name = f"test-{uuid.uuid4().hex[:8]}"
    runs: list[str] = []

    async def once(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
        runs.append(ctx.job_id)
        return {}

    runner = SaqJobRunner(redis_server.url, queue_name=queue_name)
    runner.register("test.once", once)
    try:
        job_id = await runner.enqueue("test.once", {})
        queue = await runner._connected()
        taken = await queue.dequeue(timeout=1)  # a worker's first step; it dies right here
        assert taken is not None and taken.key == job_id
        assert await queue.sweep(lock=1, abort=0.1) == []
        status = await runner.status(job_id)
        assert status is not None and status.state == "queued"
        await asyncio.sleep(1.2)
        assert await queue.sweep(lock=1, abort=0.1) == [queue.job_id(job_id)]
        worker = asyncio.create_task(runner.run_worker(1))
        deadline = time.monotonic() + 10
        while (s := await runner.status(job_id)) is None or s.state != "done":
            assert time.monotonic() < deadline, s
            await asyncio.sleep(0.02)
        runner.request_stop()
        await asyncio.wait_for(worker, 10)
        assert runs == [job_id]
    finally:
        await runner.close()


async def test_redis_job_of_a_killed_worker_is_run_by_another(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """SIGKILL a worker mid-job: once the job is past its timeout, another worker's sweep
    puts it back in the queue and runs it."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    client = SaqJobRunner(redis_server.url, queue_name=queue)

    async def fast(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
        return {"by": "survivor"}

    client.register("test.slow", fast, timeout=1)  # SAQ deems it stuck 3 s after it started
    await client.start()
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, redis_server.url, queue, str(tmp_path / "ev")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    survivor = SaqJobRunner(redis_server.url, queue_name=queue, sweep_seconds=1)
    survivor.register("test.slow", fast, timeout=1)
    task: asyncio.Task[None] | None = None
    try:
        job_id = await client.enqueue("test.slow", {"seconds": 60})
        deadline = time.monotonic() + 20
        while (s := await client.status(job_id)) is None or s.state != "running":
            assert time.monotonic() < deadline and proc.poll() is None, s
            await asyncio.sleep(0.05)
        proc.kill()
        proc.wait(5)
        task = asyncio.create_task(survivor.run_worker(1))
        deadline = time.monotonic() + 30
        while (s := await client.status(job_id)) is None or s.state != "done":
            assert time.monotonic() < deadline, s
            await asyncio.sleep(0.1)
        assert s.result == {"by": "survivor"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        survivor.request_stop()
        if task is not None:
            await asyncio.wait_for(task, 10)
        await survivor.close()
        await client.close()


async def test_redis_worker_recovers_after_a_redis_restart(tmp_path: Path) -> None:
    """Redis goes away under a running worker and comes back (same port): jobs enqueued
    afterwards run, with no restart of the worker."""
    server = RedisServer(tmp_path / "restart")
    try:
        server.start()
        system = JobSystem("redis", server.url)
        system.register("test.echo", echo)
        await system.start(concurrency=2)
        try:
            first = await system.enqueue("test.echo", {"n": 1})
            assert (await system.wait(first)).state == "done"
            server.stop()
            await asyncio.sleep(1.5)
            server.start()
            deadline = time.monotonic() + 20
            while True:
                try:
                    second = await system.enqueue("test.echo", {"n": 2})
                    break
                except Exception:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            status = await system.wait(second, timeout=20)
            assert status.state == "done" and status.result is not None
            assert status.result["echo"] == {"n": 2}
        finally:
            await system.close()
    finally:
        server.stop()


# -- media storage -----------------------------------------------------------------------


async def test_storage_round_trip(tmp_path: Path) -> None:
    storage = LocalMediaStorage(tmp_path / "media")
    assert await storage.put("exports/a.json", b'{"a": 1}', "application/json") == "exports/a.json"
    assert await storage.open("exports/a.json") == (b'{"a": 1}', "application/json")
    await storage.put("exports/a.json", b"v2", "text/plain")  # replaced, atomically
    assert await storage.open("exports/a.json") == (b"v2", "text/plain")
    assert await storage.open("exports/missing.json") is None
    assert await storage.open("exports") is None  # a directory is not a file
    assert await storage.delete("exports/a.json") is True
    assert await storage.open("exports/a.json") is None
    assert await storage.delete("exports/a.json") is False
    with pytest.raises(ValueError, match="mime"):
        await storage.put("x.bin", b"", "not a mime\r\nX-Evil: 1")


@pytest.mark.parametrize(
    "key",
    [
        "../outside.json",
        "exports/../../outside.json",
        "/etc/passwd",
        "exports//a.json",
        "exports/",
        "",
        ".",
        "..",
        ".mime/exports/a.json",
        "exports/.hidden",
        "a\\b",
        "a\x00b",
        "exports/a b.json",
        "x" * 513,
    ],
)
async def test_storage_refuses_keys_that_could_escape(tmp_path: Path, key: str) -> None:
    storage = LocalMediaStorage(tmp_path / "media")
    await storage.put("exports/a.json", b"secret", "application/json")
    with pytest.raises(InvalidKey):
        await storage.put(key, b"x", "text/plain")
    with pytest.raises(InvalidKey):
        await storage.open(key)
    assert not (tmp_path / "outside.json").exists()


async def test_storage_refuses_a_symlink_out_of_its_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    root = tmp_path / "media"
    root.mkdir()
    (root / "link").symlink_to(outside)
    storage = LocalMediaStorage(root)
    with pytest.raises(InvalidKey, match="outside the storage root"):
        await storage.open("link/secret.txt")


# -- the conversation export, end to end -------------------------------------------------

TENANT = "ten_jobs"
OTHER = "ten_other"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(create_engine(normalize_database_url(None, tmp_path)))
    await migrate(s.engine)
    await s.create_tenant("jobs", tenant_id=TENANT)
    await s.create_tenant("other", tenant_id=OTHER)
    yield s
    await s.close()


async def make_conversation(store: Store, n_messages: int, user: str = "alice") -> tuple[str, str]:
    persona = await create_persona(store, TENANT, {"name": "Ada " + uuid.uuid4().hex[:6]})
    person = await store.get_or_create_user(TENANT, user, "Alice")
    conv = await store.create_conversation(TENANT, persona_id=persona.id, user_id=person.id)
    for i in range(n_messages):
        await store.add_message(
            TENANT, conv.id, role="user" if i % 2 == 0 else "assistant", content=f"message {i}"
        )
    return conv.id, persona.id


GATES: dict[str, asyncio.Event] = {}


async def gated_failure(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
    await GATES[args["gate"]].wait()
    raise RuntimeError("gave up")


@pytest.fixture
async def export_setup(
    system: JobSystem, store: Store, tmp_path: Path
) -> tuple[JobSystem, InProcessEventLog, LocalMediaStorage]:
    """The conversation jobs on ``system``, reporting into a real in-process event log."""
    events = InProcessEventLog()
    storage = LocalMediaStorage(tmp_path / "media")
    system.setups.append(lambda runner: register_conversation_jobs(runner, store, events, storage))
    system.register("test.gated_failure", gated_failure)
    await system.start(hook=job_event_hook(events, store))
    return system, events, storage


async def test_export_writes_every_message_and_reports_in_the_conversation_log(
    export_setup: tuple[JobSystem, InProcessEventLog, LocalMediaStorage], store: Store
) -> None:
    system, events, storage = export_setup
    conv_id, persona_id = await make_conversation(store, 450)  # three pages of 200
    await events.append(conv_id, {"type": "response.done", "text": "earlier"})
    job_id = await system.enqueue(EXPORT_KIND, {"tenant_id": TENANT, "conversation_id": conv_id})
    status = await system.wait_for_log(events, conv_id, job_id)
    assert status.state == "done", status.error
    assert status.result is not None
    assert status.result["key"] == export_key(TENANT, conv_id, job_id)
    assert status.result["mime"] == "application/json"
    assert status.result["messages"] == 450

    stored = await storage.open(export_key(TENANT, conv_id, job_id))
    assert stored is not None
    data, mime = stored
    assert mime == "application/json"
    document = json.loads(data)
    assert document["conversation_id"] == conv_id
    assert document["persona_id"] == persona_id
    assert document["format"] == "salon.conversation.export"
    assert document["user"] == {"id": "alice", "name": "Alice"}
    assert [m["content"] for m in document["messages"]] == [f"message {i}" for i in range(450)]
    history = await store.list_messages(TENANT, conv_id, limit=500)
    assert document["messages"] == [m.to_public() for m in history]

    log = await events.replay(conv_id, 0)
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
    job_events = [e for e in log if e.get("job_id") == job_id]
    progress = [e["progress"] for e in job_events if e["type"] == "media.progress"]
    assert len(progress) >= 4 and progress == sorted(progress) and progress[-1] < 1
    assert job_events[-1] == {
        "type": "media.done",
        "job_id": job_id,
        "kind": EXPORT_KIND,
        "url": f"/v1/jobs/{job_id}/result",
        "mime": "application/json",
        "conversation_id": conv_id,
        "seq": job_events[-1]["seq"],
    }
    assert [e["type"] for e in job_events[:-1]] == ["media.progress"] * (len(job_events) - 1)
    conv = await store.get_conversation(TENANT, conv_id)
    assert conv is not None and conv.last_seq == log[-1]["seq"]


class ForgetWhileWriting(LocalMediaStorage):
    """Storage whose first write lets the person be forgotten just before it lands."""

    def __init__(self, root: Path, forget: Callable[[], Awaitable[None]]) -> None:
        super().__init__(root)
        self.forget = forget

    async def put(self, key: str, data: bytes, mime: str) -> str:
        await self.forget()
        return await super().put(key, data, mime)


async def test_an_export_racing_a_forget_leaves_no_file(
    system: JobSystem, store: Store, tmp_path: Path
) -> None:
    conv_id, _ = await make_conversation(store, 5, user="racer")
    person = await store.find_user(TENANT, "racer")
    assert person is not None

    async def forget() -> None:
        await store.delete_user(TENANT, person.id)

    events = InProcessEventLog()
    storage = ForgetWhileWriting(tmp_path / "media", forget)
    system.setups.append(lambda runner: register_conversation_jobs(runner, store, events, storage))
    await system.start(hook=job_event_hook(events, store))
    job_id = await system.enqueue(EXPORT_KIND, {"tenant_id": TENANT, "conversation_id": conv_id})
    status = await system.wait(job_id)
    assert status.state == "failed"
    assert status.error == "the conversation was deleted during the export"
    assert await storage.list_keys("exports") == []


async def test_export_of_an_empty_conversation(
    export_setup: tuple[JobSystem, InProcessEventLog, LocalMediaStorage], store: Store
) -> None:
    system, events, storage = export_setup
    conv_id, _ = await make_conversation(store, 0)
    job_id = await system.enqueue(EXPORT_KIND, {"tenant_id": TENANT, "conversation_id": conv_id})
    status = await system.wait_for_log(events, conv_id, job_id)
    assert status.state == "done" and status.result and status.result["messages"] == 0
    stored = await storage.open(export_key(TENANT, conv_id, job_id))
    assert stored is not None and json.loads(stored[0])["messages"] == []


async def test_export_of_another_tenants_conversation_fails_with_an_error_event(
    export_setup: tuple[JobSystem, InProcessEventLog, LocalMediaStorage], store: Store
) -> None:
    system, events, storage = export_setup
    conv_id, _ = await make_conversation(store, 3)
    job_id = await system.enqueue(EXPORT_KIND, {"tenant_id": OTHER, "conversation_id": conv_id})
    status = await system.wait(job_id)
    assert status.state == "failed"
    assert status.error == f"no conversation {conv_id!r}"
    assert await storage.list_keys("exports") == []
    log = await events.replay(conv_id, 0)
    assert log[-1]["type"] == "error"
    assert log[-1]["code"] == "job_failed" and log[-1]["job_id"] == job_id
    assert log[-1]["message"] == status.error


async def test_salon_worker_runs_an_export_into_the_redis_event_log(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The real `salon worker` console script: a job enqueued here (as a server replica
    would) is run there, its file lands in the media dir, its events in the Redis event
    log; SIGTERM stops it cleanly."""
    from memory.redis_client import create_redis
    from server.config import Settings
    from server.state import build_event_log

    data_dir = tmp_path / "salon"
    db = Store(create_engine(normalize_database_url(None, data_dir)))
    await migrate(db.engine)
    await db.create_tenant("jobs", tenant_id=TENANT)
    conv_id, _ = await make_conversation(db, 7)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALON_")}
    env.update(SALON_DATA_DIR=str(data_dir), SALON_REDIS_URL=redis_server.url)
    env.update(SALON_GRACEFUL_SHUTDOWN_SECONDS="2", SALON_LOG_FORMAT="json")
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "salon"), "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    client = SaqJobRunner(redis_server.url)  # the default queue, as `salon serve` uses
    register_conversation_jobs(client, db, InProcessEventLog(), LocalMediaStorage(tmp_path))
    redis = create_redis(redis_server.url)
    events = build_event_log(Settings(redis_url=redis_server.url), redis)
    try:
        job_id = await client.enqueue(
            EXPORT_KIND, {"tenant_id": TENANT, "conversation_id": conv_id}
        )
        deadline = time.monotonic() + 30
        while (s := await client.status(job_id)) is None or not s.finished:
            assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
            await asyncio.sleep(0.05)
        assert s.state == "done", (s, log_path.read_text())
        exported = json.loads(
            (data_dir / "media" / export_key(TENANT, conv_id, job_id)).read_bytes()
        )
        assert [m["content"] for m in exported["messages"]] == [f"message {i}" for i in range(7)]
        while not (logged := await events.replay(conv_id, 0)) or logged[-1]["type"] != "media.done":
            assert time.monotonic() < deadline, logged
            await asyncio.sleep(0.05)
        assert {e["type"] for e in logged[:-1]} == {"media.progress"}
        assert logged[-1]["url"] == f"/v1/jobs/{job_id}/result"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0, log_path.read_text()
        assert "salon worker: stopped" in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        await events.close()
        await redis.aclose()
        await client.close()
        await db.close()


# -- the HTTP API ------------------------------------------------------------------------


class Api:
    def __init__(self, client: httpx.AsyncClient, keys: dict[str, str], tokens: SessionTokens):
        self.client = client
        self.keys = keys
        self.tokens = tokens

    def key(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def session(self, user: str, tenant: str = TENANT) -> dict[str, str]:
        token, _ = self.tokens.mint(
            tenant_id=tenant, user_id=user, user_name=None, persona=None, ttl_seconds=60
        )
        return {"Authorization": f"Bearer {token}"}

    async def done(self, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
        deadline = time.monotonic() + 15
        while True:
            r = await self.client.get(f"/v1/jobs/{job_id}", headers=headers)
            assert r.status_code == 200, r.text
            if r.json()["state"] in ("done", "failed", "cancelled"):
                return dict(r.json())
            assert time.monotonic() < deadline, r.json()
            await asyncio.sleep(0.02)


@pytest.fixture
async def api(
    export_setup: tuple[JobSystem, InProcessEventLog, LocalMediaStorage], store: Store
) -> AsyncIterator[Api]:
    system, events, storage = export_setup

    async def http_error(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, HTTPError)
        return error_response(exc.status, exc.code, exc.message)

    app = Starlette(routes=jobs_api.routes, exception_handlers={HTTPError: http_error})
    tokens = SessionTokens("test-secret")
    # What AppState holds, as far as these routes need it.
    app.state.salon = SimpleNamespace(
        store=store, events=events, tokens=tokens, jobs=system.client, storage=storage, console=None
    )
    keys = {t: (await store.create_api_key(t, "admin"))[1] for t in (TENANT, OTHER)}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://salon") as client:
        yield Api(client, keys, tokens)


async def test_api_export_with_an_api_key(api: Api, store: Store) -> None:
    conv_id, _ = await make_conversation(store, 5)
    r = await api.client.post(f"/v1/conversations/{conv_id}/export", headers=api.key(TENANT))
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.headers["location"] == f"/v1/jobs/{job_id}" == r.json()["status_url"]
    job = await api.done(job_id, api.key(TENANT))
    assert job == {
        "id": job_id,
        "kind": EXPORT_KIND,
        "state": "done",
        "progress": 1.0,
        "conversation_id": conv_id,
        "error": None,
        "result": {"mime": "application/json", "messages": 5, "bytes": job["result"]["bytes"]},
        "result_url": f"/v1/jobs/{job_id}/result",
    }
    r = await api.client.get(job["result_url"], headers=api.key(TENANT))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert [m["content"] for m in r.json()["messages"]] == [f"message {i}" for i in range(5)]


async def test_api_is_tenant_and_user_scoped(api: Api, store: Store) -> None:
    conv_id, _ = await make_conversation(store, 2, user="alice")
    other = api.key(OTHER)
    r = await api.client.post(f"/v1/conversations/{conv_id}/export", headers=other)
    assert r.status_code == 404 and r.json()["error"]["code"] == "conversation_not_found"
    r = await api.client.post(f"/v1/conversations/{conv_id}/export", headers=api.session("mallory"))
    assert r.status_code == 404

    r = await api.client.post(f"/v1/conversations/{conv_id}/export", headers=api.session("alice"))
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert (await api.done(job_id, api.session("alice")))["state"] == "done"
    r = await api.client.get(f"/v1/jobs/{job_id}/result", headers=api.session("alice"))
    assert r.status_code == 200 and len(r.json()["messages"]) == 2
    for headers in (other, api.session("mallory"), api.session("alice", tenant=OTHER)):
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/result"):
            r = await api.client.get(path, headers=headers)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["error"]["code"] == "job_not_found"
    # The tenant's API key (a trusted backend) sees jobs its users started.
    assert (await api.client.get(f"/v1/jobs/{job_id}", headers=api.key(TENANT))).status_code == 200


async def test_api_errors(api: Api, store: Store) -> None:
    conv_id, _ = await make_conversation(store, 1)
    r = await api.client.post(f"/v1/conversations/{conv_id}/export")
    assert r.status_code == 401
    r = await api.client.get("/v1/jobs/job_" + "0" * 32, headers=api.key(TENANT))
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    r = await api.client.get("/v1/jobs/..%2F..%2Fetc/result", headers=api.key(TENANT))
    assert r.status_code == 404
    r = await api.client.post("/v1/conversations/conv_nope/export", headers=api.key(TENANT))
    assert r.status_code == 404 and r.json()["error"]["code"] == "conversation_not_found"


async def test_api_result_of_a_job_that_is_not_done(
    api: Api, store: Store, export_setup: tuple[JobSystem, InProcessEventLog, LocalMediaStorage]
) -> None:
    system = export_setup[0]
    conv_id, _ = await make_conversation(store, 1)
    gate = GATES[conv_id] = asyncio.Event()
    job_id = await system.enqueue(
        "test.gated_failure", {"tenant_id": TENANT, "conversation_id": conv_id, "gate": conv_id}
    )
    r = await api.client.get(f"/v1/jobs/{job_id}/result", headers=api.key(TENANT))
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_done"
    gate.set()
    job = await api.done(job_id, api.key(TENANT))
    assert job["state"] == "failed" and job["error"] == "RuntimeError: gave up"
    r = await api.client.get(f"/v1/jobs/{job_id}/result", headers=api.key(TENANT))
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_failed"
