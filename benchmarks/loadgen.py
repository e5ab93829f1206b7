"""Load-generating client processes for benchmarks/serving.py.

Each job runs in its own process (``multiprocessing``, fork) on uvloop with the
raw client of ``wsclient.py``. A job opens its connections, reports
``("ready", info)`` on its pipe, waits for ``("go", t0)`` where ``t0`` is a
``time.monotonic()`` instant shared by every process of the phase (the clock
is system-wide), runs until ``t0 + warmup + duration`` and sends back its
results. Only what happens inside the window ``[t0 + warmup, t0 + warmup +
duration]`` counts: deltas received in it, replies whose message was sent in it.

Jobs:

- ``salon``: C Salon sessions, each a closed loop of ``message.create`` ->
  reply (``[bench n=N gap=G]`` tells the fake LLM what to stream) -> the next
  message as soon as the final event arrives. Records time to
  ``response.created`` and to the first ``response.text.delta``, the gaps
  between consecutive deltas of a reply, and (paced replies) each token's
  fake-LLM write time -> delta receipt.
- ``echo``: C sockets each keeping W frames of S bytes in flight to an echo
  server; counts echoed frames.
- ``push``: C sockets each asking for N frames of S bytes (``push:N:S``), again
  as soon as the last one arrived; counts frames.
- ``idle``: K Salon sessions that do ``session.start`` and then nothing (they
  answer the server's pings); held until ``("close",)``. With ``bare`` set,
  plain connections to the baseline server.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import uvloop
from wsclient import WSConn, connect, event_type

DELTA = b"response.text.delta"
FINAL = (b"response.done", b"response.cancelled", b"error")


def raise_nofile() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run_job(job: dict[str, Any], pipe: Connection) -> None:
    """Process entry point."""
    raise_nofile()
    try:
        uvloop.run(_JOBS[job["kind"]](job, pipe))
    except BaseException as exc:
        pipe.send(("failed", repr(exc)))
        raise


async def _recv(pipe: Connection) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, pipe.recv)


async def _open_many(count: int, opener: Any, parallel: int) -> tuple[list[Any], list[str]]:
    """Run ``opener(i)`` for i in range(count), ``parallel`` at a time."""
    done: list[Any] = []
    errors: list[str] = []
    sem = asyncio.Semaphore(parallel)

    async def one(i: int) -> None:
        async with sem:
            try:
                done.append(await opener(i))
            except Exception as exc:
                errors.append(repr(exc))

    await asyncio.gather(*(one(i) for i in range(count)))
    return done, errors


# -- Salon sessions -----------------------------------------------------------------


@dataclass
class _Stream:
    conn: WSConn
    user: str
    ready: asyncio.Future[bytes]
    sent_at: float = 0.0
    last_delta: float = 0.0
    count: int = 0
    recording: bool = False
    running: bool = False


@dataclass
class _Stats:
    w0: float = 0.0
    w1: float = 0.0
    end: float = 0.0
    deltas: int = 0
    delta_bytes: int = 0
    replies: int = 0
    sent: int = 0
    no_first: int = 0
    refused: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    created: array[float] = field(default_factory=lambda: array("d"))
    first: array[float] = field(default_factory=lambda: array("d"))
    gaps: array[float] = field(default_factory=lambda: array("d"))
    token: array[float] = field(default_factory=lambda: array("d"))


async def _open_session(job: dict[str, Any], user: str, on_message: Any) -> _Stream:
    conn = await connect(
        job["host"],
        job["port"],
        job.get("path", "/v1/ws"),
        headers={"Authorization": f"Bearer {job['key']}"} if job.get("key") else None,
        deflate=job.get("deflate", False),
        on_message=on_message,
    )
    stream = _Stream(conn, user, asyncio.get_running_loop().create_future())
    conn.state = stream
    if job.get("bare"):  # the baseline server: a connection is all there is
        return stream
    start = {"type": "session.start", "persona": job["persona"], "user": {"id": user}}
    conn.send_text(json.dumps(start).encode())
    ready = await asyncio.wait_for(stream.ready, 120)
    if event_type(ready) != b"session.ready":
        raise RuntimeError(f"session.start refused: {ready[:200]!r}")
    return stream


def _ready_only(conn: WSConn, payload: bytes, now: float) -> None:
    stream = conn.state
    if isinstance(stream, _Stream) and not stream.ready.done():
        stream.ready.set_result(payload)


async def salon_job(job: dict[str, Any], pipe: Connection) -> None:
    stats = _Stats()
    paced = job["gap_ms"] > 0
    text = f"hello [bench n={job['tokens']} gap={job['gap_ms']}]"
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    active = 0

    def send_next(stream: _Stream) -> None:
        now = time.monotonic()
        if now >= stats.end:
            stream.running = False
            return
        stream.count += 1
        stream.sent_at = now
        stream.last_delta = 0.0
        stream.recording = stats.w0 <= now < stats.w1
        stats.sent += stream.recording
        body = {"type": "message.create", "id": f"{stream.user}-{stream.count}", "text": text}
        stream.conn.send_text(json.dumps(body).encode())

    def advance(stream: _Stream) -> None:
        """The next message of this stream, or its end once the window is over."""
        nonlocal active
        if not stream.running:
            return
        send_next(stream)
        if not stream.running:
            active -= 1
            if active == 0 and not finished.done():
                finished.set_result(None)

    def reply_ended(stream: _Stream) -> None:
        if stream.recording:
            stats.replies += 1
            stats.no_first += stream.last_delta == 0.0
            stream.recording = False
        advance(stream)

    def on_message(conn: WSConn, payload: bytes, now: float) -> None:
        stream = conn.state
        if not isinstance(stream, _Stream):
            return
        if not stream.ready.done():
            stream.ready.set_result(payload)
            return
        kind = event_type(payload)
        if kind == DELTA:
            if stats.w0 <= now < stats.w1:
                stats.deltas += 1
                stats.delta_bytes += len(payload)
            if stream.recording:
                if stream.last_delta == 0.0:
                    stats.first.append(now - stream.sent_at)
                else:
                    stats.gaps.append(now - stream.last_delta)
                if paced:
                    at = payload.find(b'"delta":"')
                    stats.token.append(now - float(payload[at + 9 : at + 26]))
            stream.last_delta = now
        elif kind == b"response.created":
            if stream.recording:
                stats.created.append(now - stream.sent_at)
        elif kind in (b"response.done", b"response.cancelled"):
            reply_ended(stream)
        elif kind == b"error":
            event = json.loads(payload)
            code = event.get("code", "?")
            if now < stats.end:
                stats.errors[code] = stats.errors.get(code, 0) + 1
            if "response_id" in event or "reply_to" in event:
                reply_ended(stream)  # the reply ended with an error, or will never start
            elif event.get("id") == f"{stream.user}-{stream.count}":
                # The message was refused (rate_limited, unavailable): nothing was
                # stored; like a real client, send again after a short pause.
                stats.refused += stream.recording
                stream.recording = False
                loop.call_later(0.2, advance, stream)
            # Anything else is about the connection (event_log_unavailable) or our
            # closing response.cancel: the reply in flight, if any, goes on.

    streams, errors = await _open_many(
        len(job["users"]),
        lambda i: _open_session(job, job["users"][i], on_message),
        job.get("parallel", 64),
    )
    pipe.send(("ready", {"sessions": len(streams), "errors": errors[:5]}))
    _, t0 = await _recv(pipe)
    stats.w0 = t0 + job["warmup"]
    stats.w1 = stats.w0 + job["duration"]
    stats.end = stats.w1
    stagger = job.get("stagger", 0.0)
    active = len(streams)

    def launch(stream: _Stream) -> None:
        stream.running = True
        send_next(stream)
        if not stream.running:
            nonlocal active
            active -= 1

    for stream in streams:
        delay = max(0.0, t0 + random.uniform(0, stagger) - time.monotonic())
        loop.call_later(delay, launch, stream)
    # After the window no new message is sent and replies still in flight are
    # cancelled, so that the server is quiet again before the next phase.
    await asyncio.sleep(max(0.0, stats.end - time.monotonic()))
    for stream in streams:
        if stream.running:
            stream.conn.send_text(b'{"type":"response.cancel","id":"end-of-window"}')
    if active > 0:
        try:
            await asyncio.wait_for(finished, job.get("drain", 10))
        except TimeoutError:
            stats.errors["unfinished_at_end"] = active
    for stream in streams:
        stream.conn.close()
    pipe.send(
        (
            "result",
            {
                "deltas": stats.deltas,
                "delta_bytes": stats.delta_bytes,
                "replies": stats.replies,
                "sent": stats.sent,
                "no_first": stats.no_first,
                "refused": stats.refused,
                "errors": stats.errors,
                "window": job["duration"],
                "created": stats.created.tobytes(),
                "first": stats.first.tobytes(),
                "gaps": stats.gaps.tobytes(),
                "token": stats.token.tobytes(),
            },
        )
    )


async def idle_job(job: dict[str, Any], pipe: Connection) -> None:
    started = time.monotonic()
    streams, errors = await _open_many(
        len(job["users"]),
        lambda i: _open_session(job, job["users"][i], _ready_only),
        job.get("parallel", 128),
    )
    pipe.send(
        (
            "ready",
            {
                "sessions": len(streams),
                "errors": len(errors),
                "first_errors": errors[:5],
                "seconds": time.monotonic() - started,
            },
        )
    )
    await _recv(pipe)  # ("close",)
    lost = sum(1 for s in streams if not s.conn.is_open)
    for stream in streams:
        stream.conn.close()
    pipe.send(("result", {"closed_by_server": lost}))


# -- baselines ------------------------------------------------------------------------


async def _baseline(job: dict[str, Any], pipe: Connection, push: bool) -> None:
    frame = b"x" * job["size"]
    request = f"push:{job['frames']}:{job['size']}".encode()
    w0 = w1 = end = 0.0
    counted = 0
    counted_bytes = 0
    received: dict[WSConn, int] = {}

    def on_message(conn: WSConn, payload: bytes, now: float) -> None:
        nonlocal counted, counted_bytes
        if w0 <= now < w1:
            counted += 1
            counted_bytes += len(payload)
        if push:
            received[conn] += 1
            if received[conn] == job["frames"]:
                received[conn] = 0
                if now < end:
                    conn.send_text(request)
        elif now < end:
            conn.send_text(frame)

    conns, errors = await _open_many(
        job["clients"],
        lambda i: connect(job["host"], job["port"], "/", on_message=on_message),
        64,
    )
    for conn in conns:
        received[conn] = 0
    pipe.send(("ready", {"sessions": len(conns), "errors": errors[:5]}))
    _, t0 = await _recv(pipe)
    w0 = t0 + job["warmup"]
    w1 = w0 + job["duration"]
    end = w1
    await asyncio.sleep(max(0.0, t0 - time.monotonic()))
    for conn in conns:
        if push:
            conn.send_text(request)
        else:
            for _ in range(job["window"]):
                conn.send_text(frame)
    await asyncio.sleep(max(0.0, end - time.monotonic()) + 0.5)
    for conn in conns:
        conn.close()
    pipe.send(
        (
            "result",
            {"deltas": counted, "delta_bytes": counted_bytes, "window": job["duration"]},
        )
    )


async def echo_job(job: dict[str, Any], pipe: Connection) -> None:
    await _baseline(job, pipe, push=False)


async def push_job(job: dict[str, Any], pipe: Connection) -> None:
    await _baseline(job, pipe, push=True)


_JOBS = {"salon": salon_job, "idle": idle_job, "echo": echo_job, "push": push_job}


def floats(raw: bytes) -> array[float]:
    values = array("d")
    values.frombytes(raw)
    return values
