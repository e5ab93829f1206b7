"""In-process event log for the embedded default (one server process).

Retains per conversation at most ``max_events`` events for at most
``ttl_seconds``. On graceful shutdown it can be saved to a file and loaded on
the next start, so a client that reconnects after a restart still resumes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from memory.eventlog.base import (
    Event,
    EventLog,
    LiveBuffer,
    LoggedEvent,
    ResumeGap,
    Subscription,
    to_json,
)


class _QueueSubscription(Subscription):
    def __init__(self, owner: _ConversationLog, maxsize: int) -> None:
        self._owner = owner
        self._buffer = LiveBuffer(maxsize)
        self.offer = self._buffer.offer

    async def get(self) -> Event:
        return await self._buffer.get()

    def ready(self) -> list[Event]:
        return self._buffer.take_ready()

    async def close(self) -> None:
        self._owner.subscribers.discard(self)


@dataclass
class _ConversationLog:
    last_seq: int = 0
    # The retained events as JSON, and when each was appended; their seqs run
    # contiguously up to last_seq. Strings and floats are not tracked by the
    # garbage collector: retaining an event allocates no object it must walk
    # (as dicts they made full collections grow with them; as (time, seq, text)
    # tuples each was a young object, and at full load they alone set off a
    # young collection every 20,000 events).
    events: deque[str] = field(default_factory=deque)
    times: deque[float] = field(default_factory=deque)
    subscribers: set[_QueueSubscription] = field(default_factory=set)

    def first(self) -> int:
        """The seq of the oldest retained event (``last_seq + 1`` when none is)."""
        return self.last_seq - len(self.events) + 1

    def keep(self, at: float, wire: str) -> None:
        self.events.append(wire)
        self.times.append(at)

    def clear(self) -> None:
        self.events.clear()
        self.times.clear()


class InProcessEventLog(EventLog):
    def __init__(
        self,
        *,
        max_events: int = 5000,
        ttl_seconds: float = 900.0,
        subscriber_buffer: int = 10_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.max_events = max_events
        self.ttl_seconds = ttl_seconds
        self.subscriber_buffer = subscriber_buffer
        self._clock = clock or time.time
        self._logs: dict[str, _ConversationLog] = {}
        self._swept: dict[str, int] = {}

    def _log(self, conversation_id: str) -> _ConversationLog:
        log = self._logs.get(conversation_id)
        if log is None:
            # A swept conversation keeps counting from where it was.
            log = self._logs[conversation_id] = _ConversationLog(
                last_seq=self._swept.pop(conversation_id, 0)
            )
        return log

    def _trim(self, log: _ConversationLog) -> None:
        horizon = self._clock() - self.ttl_seconds
        events, times = log.events, log.times
        while events and (len(events) > self.max_events or times[0] < horizon):
            events.popleft()
            times.popleft()

    async def append(self, conversation_id: str, event: Event) -> Event:
        return self._place(conversation_id, event)

    def submit(self, conversation_id: str, event: Event) -> asyncio.Future[Event]:
        # Stored at once: the future is already done (no task per token).
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        future.set_result(self._place(conversation_id, event))
        return future

    def _place(self, conversation_id: str, event: Event) -> LoggedEvent:
        # No await between reading and bumping last_seq: appends are atomic on the loop.
        log = self._log(conversation_id)
        log.last_seq += 1
        stored = LoggedEvent(event)
        stored["conversation_id"] = conversation_id
        stored["seq"] = log.last_seq
        stored.wire = to_json(stored)
        log.keep(self._clock(), stored.wire)
        self._trim(log)
        for sub in list(log.subscribers):
            sub.offer(stored)
        return stored

    async def replay(self, conversation_id: str, after: int) -> list[Event]:
        log = self._log(conversation_id)
        self._trim(log)
        if after > log.last_seq:
            raise ResumeGap(conversation_id, after, log.first(), log.last_seq)
        if after == log.last_seq:
            return []
        first = log.first()
        if after < first - 1:
            raise ResumeGap(conversation_id, after, first, log.last_seq)
        skip = after - first + 1
        return [LoggedEvent.parse(payload) for payload in islice(log.events, skip, None)]

    async def latest_seq(self, conversation_id: str) -> int:
        log = self._logs.get(conversation_id)
        return log.last_seq if log else self._swept.get(conversation_id, 0)

    async def ensure_floor(self, conversation_id: str, seq: int) -> None:
        log = self._log(conversation_id)
        if log.last_seq < seq:
            # Events up to ``seq`` were issued but are not here: what is retained
            # no longer joins up with the head, so drop it and let resumes gap.
            log.last_seq = seq
            log.clear()

    async def subscribe(self, conversation_id: str) -> Subscription:
        log = self._log(conversation_id)
        sub = _QueueSubscription(log, self.subscriber_buffer)
        log.subscribers.add(sub)
        return sub

    async def forget(self, conversation_id: str) -> None:
        log = self._logs.get(conversation_id)
        if log is not None:
            log.clear()
        self._swept.pop(conversation_id, None)

    def sweep(self) -> int:
        """Drop expired events and empty idle logs; return how many logs remain."""
        for cid, log in list(self._logs.items()):
            self._trim(log)
            if not log.events and not log.subscribers:
                self._swept[cid] = log.last_seq  # an int per idle conversation
                del self._logs[cid]
        return len(self._logs)

    # -- persistence across a graceful restart ---------------------------------

    def save(self, path: Path) -> int:
        """Write retained events to ``path`` (JSON lines); return how many."""
        count = 0
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for cid, log in self._logs.items():
                self._trim(log)
                fh.write(json.dumps({"conversation_id": cid, "last_seq": log.last_seq}) + "\n")
                for ts, payload in zip(log.times, log.events, strict=True):
                    fh.write(f'{{"ts":{ts!r},"event":{payload}}}\n')
                    count += 1
        tmp.replace(path)
        return count

    def load(self, path: Path) -> int:
        """Load events saved by :meth:`save`; a missing file loads nothing."""
        if not path.exists():
            return 0
        loaded: dict[str, tuple[int, list[tuple[int, float, str]]]] = {}
        events: list[tuple[int, float, str]] = []
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                item = json.loads(line)
                if "conversation_id" in item:
                    events = []
                    loaded[item["conversation_id"]] = (int(item["last_seq"]), events)
                else:
                    event = item["event"]
                    events.append((int(event["seq"]), float(item["ts"]), to_json(event)))
        count = 0
        for cid, (last_seq, saved) in loaded.items():
            log = self._log(cid)
            log.last_seq = max(log.last_seq, last_seq)
            seqs = [seq for seq, _, _ in saved]
            # Kept only if they join up with the head (save() writes them so).
            if log.events or seqs != list(range(log.last_seq - len(saved) + 1, log.last_seq + 1)):
                continue
            for _, ts, wire in saved:
                log.keep(ts, wire)
            count += len(saved)
            self._trim(log)
        # Loaded once: after a later crash, a stale snapshot must not come back.
        path.unlink()
        return count
