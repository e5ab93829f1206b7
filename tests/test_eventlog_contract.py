"""Contract tests for :class:`memory.eventlog.EventLog`, run against every backend.

``TestEventLogContract`` holds what every event log must do; it runs once per
entry in ``EVENTLOG_BACKENDS``. Tests that rely on the in-process
implementation's own features (file persistence, ``sweep``, the bounded
subscriber queue) are below it, outside the class.
"""

from __future__ import annotations

import asyncio
import gc
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any, Protocol, cast

import pytest

from memory.eventlog import (
    AppendWindow,
    EventLog,
    InProcessEventLog,
    Lagged,
    LoggedEvent,
    ResumeGap,
    event_text,
    follow,
    follow_batches,
)
from memory.eventlog.base import Event

# -- backends -------------------------------------------------------------------


class Backend(Protocol):
    """What the contract tests need from a backend, beyond the EventLog API."""

    async def make(
        self,
        *,
        max_events: int = ...,
        ttl_seconds: float = ...,
        subscriber_buffer: int = ...,
    ) -> EventLog:
        """A fresh, empty event log with these retention options."""
        ...

    async def advance(self, seconds: float) -> None:
        """Move this backend's clock forward (for retention by age)."""
        ...

    async def subscriber_count(self, log: EventLog, conversation_id: str) -> int:
        """How many live subscriptions the log holds for a conversation."""
        ...

    async def aclose(self) -> None:
        """Close every log made."""
        ...


class InProcessBackend:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.logs: list[InProcessEventLog] = []

    def clock(self) -> float:
        return self.now

    async def make(
        self,
        *,
        max_events: int = 5000,
        ttl_seconds: float = 900.0,
        subscriber_buffer: int = 10_000,
    ) -> EventLog:
        log = InProcessEventLog(
            max_events=max_events,
            ttl_seconds=ttl_seconds,
            subscriber_buffer=subscriber_buffer,
            clock=self.clock,
        )
        self.logs.append(log)
        return log

    async def advance(self, seconds: float) -> None:
        self.now += seconds

    async def subscriber_count(self, log: EventLog, conversation_id: str) -> int:
        assert isinstance(log, InProcessEventLog)
        conv = log._logs.get(conversation_id)
        return len(conv.subscribers) if conv else 0

    async def aclose(self) -> None:
        for log in self.logs:
            await log.close()


class RedisBackend:
    """Redis-backed logs on the session's redis-server; time is an injected clock too."""

    def __init__(self, url: str) -> None:
        from memory.redis_client import create_redis

        self.now = 1_700_000_000.0
        self.url = url
        self.redis = create_redis(url)
        self.logs: list[EventLog] = []
        self.prefix = f"t{uuid.uuid4().hex[:8]}:"

    def clock(self) -> float:
        return self.now

    async def make(
        self,
        *,
        max_events: int = 5000,
        ttl_seconds: float = 900.0,
        subscriber_buffer: int = 10_000,
    ) -> EventLog:
        from memory.eventlog.redis import RedisEventLog

        # TTLs on keys run on Redis' real clock; keep them long so only the
        # injected clock decides what is expired.
        log = RedisEventLog(
            self.redis,
            max_events=max_events,
            ttl_seconds=ttl_seconds,
            subscriber_buffer=subscriber_buffer,
            prefix=self.prefix,
            clock=self.clock,
        )
        self.logs.append(log)
        return log

    async def advance(self, seconds: float) -> None:
        self.now += seconds

    async def subscriber_count(self, log: EventLog, conversation_id: str) -> int:
        from memory.eventlog.redis import RedisEventLog

        assert isinstance(log, RedisEventLog)
        return len(log._subs.get(conversation_id, ()))

    async def aclose(self) -> None:
        for log in self.logs:
            await log.close()
        await self.redis.aclose()


# One entry per hot-state backend; each test runs against every one.
EVENTLOG_BACKENDS: dict[str, Callable[..., Backend]] = {
    "inprocess": InProcessBackend,
    "redis": RedisBackend,
}


@pytest.fixture(params=list(EVENTLOG_BACKENDS))
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "redis":
        b: Backend = RedisBackend(request.getfixturevalue("redis_server").url)
    else:
        b = EVENTLOG_BACKENDS[request.param]()
    try:
        yield b
    finally:
        await b.aclose()


MakeLog = Callable[..., Awaitable[EventLog]]


@pytest.fixture
def make_log(backend: Backend) -> MakeLog:
    """``await make_log(max_events=..., ttl_seconds=..., subscriber_buffer=...)``."""
    return backend.make


@pytest.fixture
async def log(make_log: MakeLog) -> EventLog:
    """An event log with default retention."""
    return await make_log()


@pytest.fixture
def cid() -> str:
    # Unique per test, so a shared backend (a Redis server) never mixes tests.
    return f"conv_test_{uuid.uuid4().hex}"


# -- helpers --------------------------------------------------------------------


async def _append_n(log: EventLog, cid: str, n: int, **fields: Any) -> list[Event]:
    return [await log.append(cid, {"type": "t", "i": i, **fields}) for i in range(n)]


def _follow(log: EventLog, cid: str, after: int) -> AsyncGenerator[Event, None]:
    """``follow`` typed as the async generator it is (so it can be ``aclose``d)."""
    return cast(AsyncGenerator[Event, None], follow(log, cid, after))


def _seqs(events: list[Event]) -> list[int]:
    return [e["seq"] for e in events]


async def _take(log: EventLog, cid: str, after: int, n: int, timeout: float = 10.0) -> list[Event]:
    """The first ``n`` events ``follow`` yields after ``after``."""
    out: list[Event] = []
    async with asyncio.timeout(timeout), aclosing(_follow(log, cid, after)) as stream:
        async for event in stream:
            out.append(event)
            if len(out) == n:
                break
    return out


async def _producer(log: EventLog, cid: str, upto: int, burst: int) -> None:
    """Append events until seq ``upto``, ``burst`` at a time, yielding in between."""
    n = await log.latest_seq(cid)
    while n < upto:
        for _ in range(min(burst, upto - n)):
            event = await log.append(cid, {"type": "delta", "n": n + 1})
            n = event["seq"]
        await asyncio.sleep(0)


def _assert_contiguous(events: list[Event], first: int, last: int, cid: str) -> None:
    assert _seqs(events) == list(range(first, last + 1))
    assert all(e["conversation_id"] == cid for e in events)
    assert all(e["n"] == e["seq"] for e in events), "payload does not match its seq"


# -- the contract ---------------------------------------------------------------


class TestEventLogContract:
    async def test_the_text_a_socket_sends_is_the_event_replayed_or_live(
        self, log: EventLog, cid: str
    ) -> None:
        body = {"type": "delta", "delta": 'é "quoted" \\ \n', "nested": {"a": [1, None]}}
        sub = await log.subscribe(cid)
        try:
            appended = await log.append(cid, body)
            async with asyncio.timeout(10):
                live = await sub.get()
        finally:
            await sub.close()
        (replayed,) = await log.replay(cid, 0)
        expected = {**body, "conversation_id": cid, "seq": appended["seq"]}
        for event in (live, replayed):
            assert event == expected
            # Sent as encoded by the log (once), it must still be exactly the event.
            assert json.loads(event_text(event)) == expected
        assert json.loads(event_text({"type": "error", "code": "x"})) == {
            "type": "error",
            "code": "x",
        }

    async def test_forget_deletes_the_events_but_not_the_seq(self, log: EventLog, cid: str) -> None:
        await _append_n(log, cid, 5)
        await log.forget(cid)
        with pytest.raises(ResumeGap):
            await log.replay(cid, 0)
        assert await log.latest_seq(cid) == 5
        assert (await log.append(cid, {"type": "t"}))["seq"] == 6

    async def test_raising_the_floor_makes_older_resumes_gap(self, log: EventLog, cid: str) -> None:
        await _append_n(log, cid, 5)
        await log.ensure_floor(cid, 20)  # events 6..20 were issued elsewhere and are lost
        with pytest.raises(ResumeGap):
            await log.replay(cid, 3)  # must not silently return 4..5 and skip 6..20
        assert (await log.append(cid, {"type": "t"}))["seq"] == 21
        assert _seqs(await log.replay(cid, 20)) == [21]

    async def test_seq_starts_at_one_and_rises_by_one(self, log: EventLog, cid: str) -> None:
        assert await log.latest_seq(cid) == 0
        original = {"type": "message.delta", "text": "héllo", "nested": {"a": [1, 2]}}
        first = await log.append(cid, original)
        assert first == {**original, "conversation_id": cid, "seq": 1}
        assert original == {"type": "message.delta", "text": "héllo", "nested": {"a": [1, 2]}}

        rest = await _append_n(log, cid, 9)
        assert _seqs(rest) == list(range(2, 11))
        assert [e["i"] for e in rest] == list(range(9))
        assert await log.latest_seq(cid) == 10

    async def test_seq_is_independent_per_conversation(self, log: EventLog, cid: str) -> None:
        other = cid + "-other"
        await _append_n(log, cid, 3)
        assert (await log.append(other, {"type": "x"}))["seq"] == 1
        assert (await log.append(cid, {"type": "x"}))["seq"] == 4
        assert await log.latest_seq(cid) == 4
        assert await log.latest_seq(other) == 1
        assert await log.latest_seq(cid + "-never") == 0
        assert all(e["conversation_id"] == other for e in await log.replay(other, 0))

    async def test_a_seq_in_the_event_is_replaced(self, log: EventLog, cid: str) -> None:
        await log.append(cid, {"type": "a"})
        stored = await log.append(cid, {"type": "b", "seq": 99, "conversation_id": "spoof"})
        assert (stored["seq"], stored["conversation_id"]) == (2, cid)
        assert _seqs(await log.replay(cid, 0)) == [1, 2]

    async def test_replay_after(self, log: EventLog, cid: str) -> None:
        appended = await _append_n(log, cid, 10)
        assert await log.replay(cid, 0) == appended
        for after in (1, 4, 9):
            replayed = await log.replay(cid, after)
            assert replayed == appended[after:]
            assert _seqs(replayed) == list(range(after + 1, 11))
        assert await log.replay(cid, 10) == []

    async def test_replay_of_an_empty_conversation(self, log: EventLog, cid: str) -> None:
        assert await log.replay(cid, 0) == []

    async def test_replay_beyond_latest_raises(self, log: EventLog, cid: str) -> None:
        with pytest.raises(ResumeGap):
            await log.replay(cid, 1)
        await _append_n(log, cid, 3)
        with pytest.raises(ResumeGap) as info:
            await log.replay(cid, 4)
        assert (info.value.after, info.value.latest) == (4, 3)
        with pytest.raises(ResumeGap):
            await log.replay(cid, 1000)

    async def test_retention_by_count(self, make_log: MakeLog, cid: str) -> None:
        log = await make_log(max_events=5)
        await _append_n(log, cid, 20)
        assert await log.latest_seq(cid) == 20

        with pytest.raises(ResumeGap) as info:
            await log.replay(cid, 0)
        assert (info.value.after, info.value.first_available, info.value.latest) == (0, 16, 20)
        with pytest.raises(ResumeGap):
            await log.replay(cid, 14)

        assert _seqs(await log.replay(cid, 15)) == [16, 17, 18, 19, 20]
        assert _seqs(await log.replay(cid, 18)) == [19, 20]
        assert await log.replay(cid, 20) == []
        assert (await log.append(cid, {"type": "x"}))["seq"] == 21

    async def test_retention_by_age(self, backend: Backend, make_log: MakeLog, cid: str) -> None:
        log = await make_log(ttl_seconds=10)
        await _append_n(log, cid, 3)  # seq 1..3 at t=0
        await backend.advance(5)
        await _append_n(log, cid, 3)  # seq 4..6 at t=5
        await backend.advance(4)  # t=9: nothing is older than 10s yet
        assert _seqs(await log.replay(cid, 0)) == [1, 2, 3, 4, 5, 6]

        await backend.advance(2)  # t=11: 1..3 are 11s old, 4..6 are 6s old
        with pytest.raises(ResumeGap) as info:
            await log.replay(cid, 0)
        assert (info.value.first_available, info.value.latest) == (4, 6)
        with pytest.raises(ResumeGap):
            await log.replay(cid, 2)
        assert _seqs(await log.replay(cid, 3)) == [4, 5, 6]
        assert await log.latest_seq(cid) == 6
        assert (await log.append(cid, {"type": "x"}))["seq"] == 7

    async def test_ensure_floor(self, log: EventLog, cid: str) -> None:
        await log.ensure_floor(cid, 41)
        assert await log.latest_seq(cid) == 41
        assert await log.replay(cid, 41) == []
        assert (await log.append(cid, {"type": "x"}))["seq"] == 42
        assert _seqs(await log.replay(cid, 41)) == [42]

        await log.ensure_floor(cid, 10)  # never lowers
        await log.ensure_floor(cid, 42)
        assert await log.latest_seq(cid) == 42
        assert (await log.append(cid, {"type": "x"}))["seq"] == 43

        other = cid + "-other"
        await log.ensure_floor(other, 0)
        assert (await log.append(other, {"type": "x"}))["seq"] == 1

    async def test_subscribe_sees_only_later_events(self, log: EventLog, cid: str) -> None:
        await _append_n(log, cid, 2)
        async with await log.subscribe(cid) as sub:
            await log.append(cid, {"type": "live", "n": 3})
            await log.append(cid + "-other", {"type": "elsewhere"})
            await log.append(cid, {"type": "live", "n": 4})
            async with asyncio.timeout(5):
                got = [await sub.get(), await sub.get()]
        assert _seqs(got) == [3, 4]
        assert all(e["conversation_id"] == cid and e["type"] == "live" for e in got)

    async def test_subscription_close_removes_it(
        self, backend: Backend, log: EventLog, cid: str
    ) -> None:
        sub = await log.subscribe(cid)
        async with await log.subscribe(cid):
            assert await backend.subscriber_count(log, cid) == 2
        assert await backend.subscriber_count(log, cid) == 1
        await sub.close()
        assert await backend.subscriber_count(log, cid) == 0
        await log.append(cid, {"type": "after close"})  # delivering to nobody is fine

    async def test_follow_backlog_then_live(self, log: EventLog, cid: str) -> None:
        await _producer(log, cid, upto=5, burst=5)
        producer = asyncio.create_task(_producer(log, cid, upto=12, burst=1))
        try:
            got = await _take(log, cid, after=2, n=10)
        finally:
            await producer
        _assert_contiguous(got, 3, 12, cid)

    async def test_follow_concurrent_appends_no_gap_no_duplicate(
        self, log: EventLog, cid: str
    ) -> None:
        producer = asyncio.create_task(_producer(log, cid, upto=500, burst=7))
        try:
            async with asyncio.timeout(10):
                while await log.latest_seq(cid) < 150:
                    await asyncio.sleep(0)
            started_at = await log.latest_seq(cid)
            got = await _take(log, cid, after=100, n=400)
        finally:
            await producer
        assert started_at < 500, "the follower must also see live events"
        _assert_contiguous(got, 101, 500, cid)

    async def test_follow_raises_resume_gap_when_too_old(
        self, backend: Backend, make_log: MakeLog, cid: str
    ) -> None:
        log = await make_log(max_events=5)
        await _append_n(log, cid, 20)
        stream = follow(log, cid, 3)
        with pytest.raises(ResumeGap) as info:
            async with asyncio.timeout(5):
                await anext(stream)
        assert info.value.first_available == 16
        assert await backend.subscriber_count(log, cid) == 0  # follow cleaned up

        with pytest.raises(ResumeGap):
            async with asyncio.timeout(5):
                await anext(follow(log, cid, 21))  # beyond latest
        assert await backend.subscriber_count(log, cid) == 0

        assert _seqs(await _take(log, cid, after=15, n=5)) == [16, 17, 18, 19, 20]

    async def test_closing_follow_releases_its_subscription(
        self, backend: Backend, log: EventLog, cid: str
    ) -> None:
        await _append_n(log, cid, 3)
        async with aclosing(_follow(log, cid, 0)) as stream:
            assert (await anext(stream))["seq"] == 1
            assert await backend.subscriber_count(log, cid) == 1
        assert await backend.subscriber_count(log, cid) == 0

    async def test_lagging_follower_refills_from_the_log(self, make_log: MakeLog, cid: str) -> None:
        log = await make_log(subscriber_buffer=5)
        await log.append(cid, {"type": "delta", "n": 1})
        async with asyncio.timeout(10), aclosing(_follow(log, cid, 0)) as stream:
            got = [await anext(stream)]  # subscribed; now fall far behind
            await _producer(log, cid, upto=60, burst=60)
            while got[-1]["seq"] < 60:
                got.append(await anext(stream))
            # And it keeps up with live traffic in bursts larger than its buffer.
            producer = asyncio.create_task(_producer(log, cid, upto=300, burst=23))
            try:
                while got[-1]["seq"] < 300:
                    got.append(await anext(stream))
            finally:
                await producer
        _assert_contiguous(got, 1, 300, cid)

    async def test_follow_batches_gives_what_is_ready_at_once_in_order(
        self, log: EventLog, cid: str
    ) -> None:
        await _append_n(log, cid, 4)
        batches = follow_batches(log, cid, 1)
        async with asyncio.timeout(10), aclosing(batches) as stream:
            assert _seqs(await anext(stream)) == [2, 3, 4]  # the backlog, in one batch
            reader = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0.05)  # the reader waits for live events
            await log.append(cid, {"type": "t"})
            first = await reader
            # Then a burst appended while nobody reads comes out together.
            await _append_n(log, cid, 6)
            got = list(first)
            while got[-1]["seq"] < 11:
                batch = await anext(stream)
                assert batch, "an empty batch"
                got.extend(batch)
        assert _seqs(got) == list(range(5, 12))
        assert _seqs(first) == [5]

    async def test_follow_batches_keeps_a_burst_together(self, log: EventLog, cid: str) -> None:
        await log.append(cid, {"type": "t"})
        batches = follow_batches(log, cid, 0)
        async with asyncio.timeout(10), aclosing(batches) as stream:
            assert _seqs(await anext(stream)) == [1]
            await _append_n(log, cid, 30)  # nobody reads meanwhile
            got: list[Event] = []
            sizes = []
            while len(got) < 30:
                batch = await anext(stream)
                sizes.append(len(batch))
                got.extend(batch)
        assert _seqs(got) == list(range(2, 32))
        # Live events arrive at the subscription as they are logged; what had
        # arrived by the time the reader looked comes as one batch.
        assert max(sizes) > 1, sizes

    async def test_two_followers_see_identical_sequences(self, log: EventLog, cid: str) -> None:
        await _producer(log, cid, upto=20, burst=20)
        producer = asyncio.create_task(_producer(log, cid, upto=300, burst=11))
        try:
            one, two = await asyncio.gather(
                _take(log, cid, after=0, n=300), _take(log, cid, after=0, n=300)
            )
        finally:
            await producer
        assert one == two
        _assert_contiguous(one, 1, 300, cid)

    async def test_submitted_events_keep_their_order_with_many_in_flight(
        self, log: EventLog, cid: str
    ) -> None:
        """A writer that does not wait for each append still gets its order, live and replayed."""
        other = f"{cid}_other"
        sub = await log.subscribe(cid)
        try:
            window = AppendWindow(log, cid, depth=64)
            futures = []
            for i in range(300):
                await window.put({"type": "t", "i": i})
                # A second conversation, and a plain append, interleaved with the window's.
                futures.append(log.submit(other, {"type": "o", "i": i}))
                if i % 50 == 0:
                    await log.append(cid, {"type": "plain", "i": i})
                if i % 7 == 0:
                    await asyncio.sleep(0)  # batches go out while more are submitted
            await window.drain()
            elsewhere = await asyncio.gather(*futures)
            live = [await asyncio.wait_for(sub.get(), 10) for _ in range(306)]
        finally:
            await sub.close()
        expected: list[tuple[str, int]] = []
        for i in range(300):
            expected.append(("t", i))
            if i % 50 == 0:
                expected.append(("plain", i))
        replayed = await log.replay(cid, 0)
        assert [(e["type"], e["i"]) for e in replayed] == expected
        assert [(e["type"], e["i"]) for e in live] == expected
        assert _seqs(replayed) == _seqs(live) == list(range(1, 307))
        assert window.last_seq == 306  # the window's last event, after the last plain append
        assert _seqs(elsewhere) == list(range(1, 301))
        assert [e["i"] for e in elsewhere] == list(range(300))

    async def test_an_append_window_waits_only_when_it_is_full(
        self, log: EventLog, cid: str
    ) -> None:
        window = AppendWindow(log, cid, depth=4)
        assert window.last_seq == 0
        for i in range(40):
            await window.put({"type": "t", "i": i})
            assert len(window._unfinished) < 4
            assert window.last_seq <= i + 1  # only what is known stored
        await window.drain()
        assert window.last_seq == 40
        assert not window._unfinished
        assert [e["i"] for e in await log.replay(cid, 0)] == list(range(40))


# -- in-process implementation only ------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _fill(log: InProcessEventLog, cid: str, n: int) -> None:
    for i in range(n):
        await log.append(cid, {"type": "t", "i": i})


async def test_inprocess_save_load_round_trip(tmp_path: Path) -> None:
    clock = Clock()
    log = InProcessEventLog(max_events=5, ttl_seconds=60, clock=clock)
    await _fill(log, "trimmed", 8)  # retains 4..8
    await _fill(log, "short", 3)
    await log.ensure_floor("floor-only", 40)
    path = tmp_path / "events.jsonl"

    assert log.save(path) == 8
    assert path.exists() and not path.with_suffix(".tmp").exists()

    snapshot = path.read_bytes()
    clock.now += 30  # restart within the TTL
    loaded = InProcessEventLog(max_events=5, ttl_seconds=60, clock=clock)
    assert loaded.load(path) == 8
    assert not path.exists()  # consumed: a later crash must not bring back this snapshot
    for cid in ("trimmed", "short", "floor-only"):
        assert await loaded.latest_seq(cid) == await log.latest_seq(cid)
    assert await loaded.replay("trimmed", 3) == await log.replay("trimmed", 3)
    assert _seqs(await loaded.replay("trimmed", 3)) == [4, 5, 6, 7, 8]
    assert await loaded.replay("short", 0) == await log.replay("short", 0)
    assert await loaded.latest_seq("floor-only") == 40
    with pytest.raises(ResumeGap):
        await loaded.replay("trimmed", 0)

    assert (await loaded.append("trimmed", {"type": "t"}))["seq"] == 9
    assert (await loaded.append("floor-only", {"type": "t"}))["seq"] == 41

    # Loading keeps seqs rising but drops events that expired while stopped.
    clock.now += 120
    path.write_bytes(snapshot)  # the same snapshot, loaded much later
    late = InProcessEventLog(max_events=5, ttl_seconds=60, clock=clock)
    assert late.load(path) == 8  # read from the file...
    assert await late.replay("trimmed", 8) == []  # ...but expired on load
    assert await late.latest_seq("trimmed") == 8
    with pytest.raises(ResumeGap):
        await late.replay("trimmed", 3)


async def test_inprocess_load_drops_events_that_do_not_join_the_head(tmp_path: Path) -> None:
    """A hand-edited or torn snapshot: the seqs are kept, the events are not (resumes gap)."""
    log = InProcessEventLog()
    await _fill(log, "c", 4)
    path = tmp_path / "events.jsonl"
    log.save(path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1], lines[3], lines[4]]) + "\n")  # seq 2 gone
    loaded = InProcessEventLog()
    assert loaded.load(path) == 0
    assert await loaded.latest_seq("c") == 4
    assert await loaded.replay("c", 4) == []
    with pytest.raises(ResumeGap):
        await loaded.replay("c", 2)


async def test_inprocess_retained_events_are_no_work_for_the_garbage_collector() -> None:
    """Retaining an event allocates nothing the collector tracks (no young object per token)."""
    log = InProcessEventLog()
    await log.append("c", {"type": "t"})
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for i in range(2000):
            log._place("c", {"type": "response.text.delta", "delta": f"t{i}"})
        grown = len(gc.get_objects()) - before
    finally:
        gc.enable()
    assert grown < 100, f"{grown} tracked objects left by 2,000 retained events"
    assert len(await log.replay("c", 0)) == 2001


async def test_inprocess_load_missing_file(tmp_path: Path) -> None:
    log = InProcessEventLog()
    assert log.load(tmp_path / "nope.jsonl") == 0
    assert await log.latest_seq("anything") == 0


async def test_inprocess_full_expiry_keeps_seq_rising() -> None:
    clock = Clock()
    log = InProcessEventLog(ttl_seconds=10, clock=clock)
    await _fill(log, "c", 3)
    clock.now += 11
    assert await log.replay("c", 3) == []
    with pytest.raises(ResumeGap) as info:
        await log.replay("c", 2)
    assert (info.value.first_available, info.value.latest) == (4, 3)
    assert (await log.append("c", {"type": "t"}))["seq"] == 4


async def test_inprocess_sweep_drops_empty_expired_logs() -> None:
    clock = Clock()
    log = InProcessEventLog(ttl_seconds=10, clock=clock)
    await _fill(log, "expired", 2)
    await _fill(log, "watched", 2)
    sub = await log.subscribe("watched")
    clock.now += 8
    await _fill(log, "fresh", 2)
    assert log.sweep() == 3  # nothing has expired yet

    clock.now += 5  # "expired" and "watched" events are 13s old, "fresh" 5s
    assert log.sweep() == 2
    assert set(log._logs) == {"watched", "fresh"}  # a subscribed log is kept
    assert await log.latest_seq("expired") == 2  # its events are gone, its seq is not
    assert await log.latest_seq("watched") == 2
    assert _seqs(await log.replay("fresh", 0)) == [1, 2]
    assert (await log.append("expired", {"type": "t"}))["seq"] == 3
    assert set(log._logs) == {"watched", "fresh", "expired"}

    await sub.close()
    clock.now += 20
    assert log.sweep() == 0
    assert log._logs == {}


async def test_inprocess_subscription_raises_lagged_after_overflow() -> None:
    log = InProcessEventLog(subscriber_buffer=3)
    sub = await log.subscribe("c")
    await _fill(log, "c", 5)
    async with asyncio.timeout(5):
        assert _seqs([await sub.get() for _ in range(3)]) == [1, 2, 3]
        with pytest.raises(Lagged):
            await sub.get()
        await log.append("c", {"type": "t"})
        assert (await sub.get())["seq"] == 6  # live again after reporting the lag
    await sub.close()


async def test_redis_live_delivery_recovers_after_a_restart(redis_private: Any) -> None:
    """After Redis restarts, followers get new events live again (not only by re-reading)."""
    from memory.eventlog.redis import RedisEventLog
    from memory.redis_client import create_redis

    redis = create_redis(redis_private.url)
    log = RedisEventLog(redis)
    # Another replica writes: its events reach this one's follower by pub/sub
    # (a replica hands its own appends to its followers directly).
    writer = RedisEventLog(redis)
    cid = uuid.uuid4().hex
    await writer.append(cid, {"type": "t", "i": 0})
    received: list[Event] = []

    async def follower() -> None:
        async for event in follow(log, cid, 0):
            received.append(event)

    async def wait_for(n: int, timeout: float) -> float:
        start = asyncio.get_running_loop().time()
        while len(received) < n:
            if asyncio.get_running_loop().time() - start > timeout:
                raise AssertionError(f"only {len(received)} of {n} events after {timeout}s")
            await asyncio.sleep(0.01)
        return asyncio.get_running_loop().time() - start

    task = asyncio.create_task(follower())
    try:
        await wait_for(1, 5)
        redis_private.restart()
        await writer.ensure_floor(cid, 1)
        await asyncio.sleep(1.0)  # the reader notices, resubscribes and lists itself again
        for i in range(1, 6):
            await writer.append(cid, {"type": "t", "i": i})
            assert await wait_for(1 + i, 5) < 1.0, (
                "event delivered late: live fan-out did not recover"
            )
        assert [e["seq"] for e in received] == [1, 2, 3, 4, 5, 6]
        assert len(log._subs.get(cid, ())) == 1  # no leaked subscriber
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await log.close()
        await writer.close()
        await redis.aclose()


class _Published:
    """Counts what Redis publishes on a prefix's live channels (a raw pub/sub client)."""

    def __init__(self, url: str, prefix: str) -> None:
        from memory.redis_client import create_redis

        self.redis = create_redis(url)
        self.pattern = f"{prefix}live:*"
        self.messages: list[str] = []

    async def __aenter__(self) -> _Published:
        self.pubsub = self.redis.pubsub()
        await self.pubsub.psubscribe(self.pattern)
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            msg = await self.pubsub.get_message(timeout=1.0)
            if msg is not None and msg["type"] == "pmessage":
                self.messages.append(msg["data"])

    async def settle(self) -> None:
        await asyncio.sleep(0.2)

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.pubsub.aclose()
        await self.redis.aclose()


async def _follow_into(log: EventLog, cid: str, into: list[Event]) -> asyncio.Task[None]:
    async def run() -> None:
        async for event in follow(log, cid, 0):
            into.append(event)

    task = asyncio.create_task(run())
    await asyncio.sleep(0.2)  # subscribed and listed
    return task


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_redis_publishes_only_when_another_replica_follows(redis_server: Any) -> None:
    """A replica's own followers get its appends directly; Redis publishes for the others."""
    from memory.eventlog.redis import RedisEventLog
    from memory.redis_client import create_redis

    prefix = f"t{uuid.uuid4().hex[:8]}:"
    redis = create_redis(redis_server.url)
    a, b = RedisEventLog(redis, prefix=prefix), RedisEventLog(redis, prefix=prefix)
    cid = uuid.uuid4().hex
    on_a: list[Event] = []
    on_b: list[Event] = []
    tasks = []
    try:
        async with _Published(redis_server.url, prefix) as published:
            tasks.append(await _follow_into(a, cid, on_a))
            for i in range(3):
                await a.append(cid, {"type": "t", "i": i})
            await _until(lambda: len(on_a) == 3)
            await published.settle()
            assert published.messages == [], "published with no other replica following"

            tasks.append(await _follow_into(b, cid, on_b))
            # Text with newlines and other control characters: one Redis argument
            # carries a conversation's batch, one event per line.
            burst = [
                a.append(cid, {"type": "t", "i": i, "text": f"a\nb\r\n{i}\u2028"})
                for i in range(3, 6)
            ]
            await asyncio.gather(*burst)  # one batch: one message for the three
            await b.append(cid, {"type": "t", "i": 6})  # b's own: published for a
            await _until(lambda: len(on_a) == 7 and len(on_b) == 7)
            assert [e["seq"] for e in on_a] == list(range(1, 8))
            assert on_b == on_a
            assert [event_text(e) for e in on_b] == [event_text(e) for e in on_a]
            assert [e.get("text") for e in on_b[3:6]] == [f"a\nb\r\n{i}\u2028" for i in range(3, 6)]
            assert await a.replay(cid, 0) == on_a  # stored one entry per event
            await published.settle()
            assert len(published.messages) == 2
            origin, _, first = published.messages[0].partition("\n")[0].partition(" ")
            assert (origin, first) == (a.origin, "4")

            # b stops following: a publishes nothing again.
            tasks.pop().cancel()
            await asyncio.sleep(0.2)
            await a.append(cid, {"type": "t", "i": 7})
            await _until(lambda: len(on_a) == 8)
            await published.settle()
            assert len(published.messages) == 2
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await a.close()
        await b.close()
        await redis.aclose()


async def test_redis_follower_listing_is_renewed_while_following(redis_server: Any) -> None:
    """A replica stays listed past its entry's lifetime while it follows; after it, not."""
    from memory.eventlog.redis import RedisEventLog
    from memory.redis_client import create_redis

    prefix = f"t{uuid.uuid4().hex[:8]}:"
    redis = create_redis(redis_server.url)
    writer = RedisEventLog(redis, prefix=prefix)
    reader = RedisEventLog(redis, prefix=prefix, followers_ttl_seconds=1.5)
    cid = uuid.uuid4().hex
    received: list[Event] = []
    task = await _follow_into(reader, cid, received)
    try:
        await asyncio.sleep(3.5)  # more than twice the entry's lifetime
        assert await redis.zscore(f"{prefix}fl:{cid}", reader.origin) is not None
        await writer.append(cid, {"type": "t"})
        await _until(lambda: len(received) == 1, timeout=2.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await _until(lambda: not reader._subs)
        assert await redis.zscore(f"{prefix}fl:{cid}", reader.origin) is None
        await writer.close()
        await reader.close()
        await redis.aclose()


async def test_concurrent_appends_keep_each_conversations_order(log: EventLog) -> None:
    """Appends of many replies at once (one Redis pipeline per loop turn) keep their order."""
    cids = [f"conv_batch_{uuid.uuid4().hex}" for _ in range(20)]

    async def reply(cid: str) -> list[Event]:
        return [await log.append(cid, {"type": "t", "i": i}) for i in range(10)]

    # All 20 replies issue their appends in the same loop turns: batches of 20.
    appended = await asyncio.gather(*(reply(c) for c in cids))
    # One conversation's events issued together in one turn also keep their order.
    burst = await asyncio.gather(*(log.append(cids[0], {"type": "b", "i": i}) for i in range(5)))

    for cid, events in zip(cids, appended, strict=True):
        assert _seqs(events) == list(range(1, 11))
        replayed = await log.replay(cid, 0)
        assert [e["i"] for e in replayed[:10]] == list(range(10))
        assert all(e["conversation_id"] == cid for e in replayed)
    assert _seqs(burst) == list(range(11, 16))
    assert [e["i"] for e in await log.replay(cids[0], 10)] == list(range(5))


async def test_redis_batched_appends_reload_a_flushed_script(redis_server: Any) -> None:
    """Redis lost its scripts (a restart, SCRIPT FLUSH): a batch of appends still succeeds."""
    from memory.eventlog.redis import RedisEventLog
    from memory.redis_client import create_redis

    redis = create_redis(redis_server.url)
    log = RedisEventLog(redis, prefix=f"t{uuid.uuid4().hex[:8]}:")
    try:
        cids = [uuid.uuid4().hex for _ in range(8)]
        await asyncio.gather(*(log.append(c, {"type": "t", "i": 0}) for c in cids))
        await redis.script_flush()
        again = await asyncio.gather(*(log.append(c, {"type": "t", "i": 1}) for c in cids))
        assert [e["seq"] for e in again] == [2] * 8
        for c in cids:
            assert [e["i"] for e in await log.replay(c, 0)] == [0, 1]
    finally:
        await log.close()
        await redis.aclose()


def test_a_placed_event_splices_its_position_into_any_object_text() -> None:
    for body in ('{"type":"t"}', '{ "type" : "t" } ', "{}", '{"a":{"b":"}"}}'):
        event = LoggedEvent.placed(body, 'conv_"x"', 7)
        assert json.loads(event.wire) == {
            **json.loads(body),
            "conversation_id": 'conv_"x"',
            "seq": 7,
        }
        assert event == json.loads(event.wire)


def test_event_text_is_compact_json_even_where_orjson_refuses() -> None:
    from memory.eventlog.base import to_json

    event = {"type": "t", "delta": 'é \u2028 "q"\n', "n": 1.5, "ok": True, "none": None}
    assert to_json(event) == json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    # Integers past 64 bits and non-string keys: the standard library's text.
    assert json.loads(to_json({"big": 2**70})) == {"big": 2**70}
    assert json.loads(to_json({1: "x"})) == {"1": "x"}


async def test_redis_append_survives_a_lost_counter_beside_its_stream(redis_server: Any) -> None:
    """The seq counter is gone but the stream is not (eviction): appends carry on above it."""
    from memory.eventlog.redis import RedisEventLog
    from memory.redis_client import create_redis

    redis = create_redis(redis_server.url)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    writer = RedisEventLog(redis, prefix=prefix)
    fresh = RedisEventLog(redis, prefix=prefix)  # a replica that never saw these seqs
    cid, other = uuid.uuid4().hex, uuid.uuid4().hex
    try:
        for i in range(3):
            await writer.append(cid, {"type": "t", "i": i})
        await redis.delete(f"{prefix}seq:{cid}")
        # In one batch with another conversation, which must not fail with it.
        again, elsewhere = await asyncio.gather(
            fresh.append(cid, {"type": "t", "i": 3}), fresh.append(other, {"type": "t"})
        )
        assert (again["seq"], elsewhere["seq"]) == (4, 1)
        assert [e["i"] for e in await fresh.replay(cid, 0)] == [0, 1, 2, 3]
    finally:
        await writer.close()
        await fresh.close()
        await redis.aclose()


async def test_redis_a_failed_batch_fails_what_its_conversation_submitted_after_it(
    redis_server: Any,
) -> None:
    """No event of a conversation is stored after one of its events failed to be."""
    from memory.eventlog.redis import RedisEventLog
    from memory.redis_client import create_redis

    redis = create_redis(redis_server.url)
    log = RedisEventLog(redis, prefix=f"t{uuid.uuid4().hex[:8]}:")
    script = log._append
    release = asyncio.Event()
    calls = 0

    async def failing_once(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()
            raise ConnectionError("Redis went away mid-batch")
        return await script(**kwargs)

    log._append = failing_once
    cid, other = uuid.uuid4().hex, uuid.uuid4().hex
    try:
        window = AppendWindow(log, cid)
        await window.put({"type": "t", "i": 0})
        await asyncio.sleep(0.05)  # the first batch is in flight (and will fail)
        await window.put({"type": "t", "i": 1})  # held behind it
        await asyncio.sleep(0.05)
        await window.put({"type": "t", "i": 2})  # held too
        unrelated = log.submit(other, {"type": "o"})  # another conversation goes on
        assert (await unrelated)["seq"] == 1
        release.set()
        with pytest.raises(ConnectionError):
            await window.drain()
        with pytest.raises(ConnectionError):
            await window.put({"type": "t", "i": 3})  # the writer must stop
        assert await log.replay(cid, 0) == []
        # A later writer (the error event that ends the reply) is stored.
        assert (await log.append(cid, {"type": "error"}))["seq"] == 1
    finally:
        await log.close()
        await redis.aclose()


async def test_an_append_window_raises_the_failure_of_an_append_it_did_not_wait_for() -> None:
    """The in-process log never fails; a log whose appends do is a subclass of it."""

    class Failing(InProcessEventLog):
        def submit(self, conversation_id: str, event: Event) -> asyncio.Future[Event]:
            future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
            if event.get("i") == 2:
                asyncio.get_running_loop().call_later(0.01, future.set_exception, OSError("disk"))
            else:
                asyncio.get_running_loop().call_later(
                    0.01, future.set_result, self._place(conversation_id, event)
                )
            return future

    window = AppendWindow(Failing(), "c", depth=100)
    for i in range(4):
        await window.put({"type": "t", "i": i})  # nothing waited for yet
    await asyncio.sleep(0.05)
    with pytest.raises(OSError, match="disk"):
        await window.put({"type": "t", "i": 4})
    with pytest.raises(OSError, match="disk"):
        await window.drain()
