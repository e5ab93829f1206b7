"""Event log base: append with a monotonic ``seq``, replay after a seq, follow live.

Every server event of a conversation is appended here *before* it is sent.
Readers never talk to the writer: they replay from the log and then follow
it, so a socket on any replica sees the same ordered stream, and a client that
says the last ``seq`` it saw gets exactly what it missed.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

Event = dict[str, Any]


def to_json(value: Any) -> str:
    """Compact JSON text of ``value``: orjson, 20x the standard library's speed for
    an event (one encode per token); the standard library for what orjson refuses
    (integers past 64 bits, keys that are not strings)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


from_json = orjson.loads


class LoggedEvent(dict[str, Any]):
    """An event as a log holds it, with its JSON text in ``wire``.

    The log serializes every event once anyway (to store or publish it); a
    socket sends ``wire`` as it is instead of encoding the dict again, which
    was one ``json.dumps`` per token per socket. Treat it as read-only: a
    changed dict no longer matches its ``wire``.
    """

    __slots__ = ("wire",)

    wire: str

    @classmethod
    def parse(cls, wire: str) -> LoggedEvent:
        """The event whose JSON text is ``wire`` (a JSON object)."""
        event = cls(from_json(wire))
        event.wire = wire
        return event

    @classmethod
    def placed(cls, body: str, conversation_id: str, seq: int) -> LoggedEvent:
        """The event of JSON object ``body`` (without position) at ``seq`` of a conversation.

        The position is spliced into the text rather than the dict encoded
        again; ``body`` must not hold ``conversation_id`` or ``seq`` itself.
        """
        return cls.of(from_json(body), body, conversation_id, seq)

    @classmethod
    def of(cls, fields: Event, body: str, conversation_id: str, seq: int) -> LoggedEvent:
        """Like :meth:`placed` for a writer that still has ``body`` as ``fields`` (no parse)."""
        event = cls(fields)
        event.place(body, conversation_id, position_prefix(conversation_id), seq)
        return event

    def place(self, body: str, conversation_id: str, prefix: str, seq: int) -> None:
        """Put this event (``body``: its JSON text without position) at ``seq``.

        ``prefix`` is ``position_prefix(conversation_id)``, computed once per batch.
        """
        self["conversation_id"] = conversation_id
        self["seq"] = seq
        head = body.rstrip()[:-1].rstrip()  # the object without its closing brace
        self.wire = f"{head}{',' if len(self) > 2 else ''}{prefix}{seq}}}"


def position_prefix(conversation_id: str) -> str:
    """``"conversation_id":"<id>","seq":`` — an event's position, up to its seq."""
    return f'"conversation_id":{to_json(conversation_id)},"seq":'


def event_text(event: Event) -> str:
    """The JSON text a socket sends for ``event`` (computed once for logged events)."""
    if type(event) is LoggedEvent:
        return event.wire
    return to_json(event)


class ResumeGap(Exception):
    """The requested position is no longer (or not) in the log."""

    def __init__(self, conversation_id: str, after: int, first_available: int, latest: int):
        super().__init__(
            f"events after seq {after} of {conversation_id} are not all retained "
            f"(retained: {first_available}..{latest})"
        )
        self.after = after
        self.first_available = first_available
        self.latest = latest


class Lagged(Exception):
    """A subscriber fell too far behind and dropped live events; re-read from the log."""


class Subscription(ABC):
    """Live events of one conversation, from the moment of subscribing."""

    @abstractmethod
    async def get(self) -> Event:
        """The next live event; raises :class:`Lagged` if some were dropped."""

    def ready(self) -> list[Event]:
        """The live events already buffered, without waiting (may be empty).

        A lag is not raised here: the next :meth:`get` raises it, after these.
        """
        return []

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class LiveBuffer:
    """The live events of one subscription, waiting for their reader.

    A deque and at most one waiting future: an asyncio.Queue per idle socket
    costs three deques and an Event. Beyond ``maxsize`` unread events (or after
    :meth:`signal_lag`) new events are dropped and the reader gets
    :class:`Lagged` once it has read what is buffered.
    """

    __slots__ = ("_items", "_maxsize", "_waiter", "lagged")

    def __init__(self, maxsize: int) -> None:
        self._items: deque[Event] = deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self.lagged = False

    def offer(self, event: Event) -> None:
        if self.lagged:
            return
        if len(self._items) >= self._maxsize:
            self.lagged = True
        else:
            self._items.append(event)
        self._wake()

    def signal_lag(self) -> None:
        self.lagged = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Event:
        while not self._items:
            if self.lagged:
                self.lagged = False
                raise Lagged()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def take_ready(self) -> list[Event]:
        items = list(self._items)
        self._items.clear()
        return items


class EventLog(ABC):
    """One implementation per hot-state backend (in-process, Redis)."""

    @abstractmethod
    async def append(self, conversation_id: str, event: Event) -> Event:
        """Give ``event`` the next seq and ``conversation_id``, store it, and return it."""

    def submit(self, conversation_id: str, event: Event) -> asyncio.Future[Event]:
        """Start appending ``event`` and return at once; the future gives what :meth:`append` does.

        A conversation's events take their seqs in the order they were
        submitted (or appended), whichever call was used, so a writer can keep
        several events in flight (see :class:`AppendWindow`). This default
        runs :meth:`append` as a task, which keeps that order only for an
        implementation whose ``append`` places the event before its first
        await; an implementation that does not must override it.
        """
        return asyncio.ensure_future(self.append(conversation_id, event))

    @abstractmethod
    async def replay(self, conversation_id: str, after: int) -> list[Event]:
        """Every retained event with ``seq > after``, in order; :class:`ResumeGap` if any is gone."""

    @abstractmethod
    async def latest_seq(self, conversation_id: str) -> int:
        """The highest seq issued for the conversation (0 if none)."""

    @abstractmethod
    async def ensure_floor(self, conversation_id: str, seq: int) -> None:
        """Make sure the next seq issued is above ``seq`` (after a restart or expiry)."""

    @abstractmethod
    async def subscribe(self, conversation_id: str) -> Subscription:
        """Start receiving live events appended from now on."""

    @abstractmethod
    async def forget(self, conversation_id: str) -> None:
        """Delete every retained event of the conversation (the person asked to be forgotten)."""

    async def ping(self) -> None:
        """Raise if the backend cannot be reached."""

    async def close(self) -> None:
        """Release connections and background tasks."""


class AppendWindow:
    """One writer's events to one conversation, up to ``depth`` appends in flight.

    A reply streaming tokens need not wait for each append to be stored before
    it emits the next: against a remote log (Redis) that wait was one round
    trip per token. :meth:`put` submits and returns while fewer than
    ``depth`` appends are unfinished; the order is kept by the log. A failed
    append is raised by a later :meth:`put` (once the appends before it are
    done) or by :meth:`drain`, after which the writer must stop: what it
    submitted after the failure is not stored.

    ``last_seq``: the seq of the last event known stored (all of them after
    :meth:`drain`), 0 before the first; what the writer records as the
    conversation's position without asking the log.
    """

    __slots__ = ("_conversation_id", "_depth", "_failed", "_log", "_unfinished", "last_seq")

    def __init__(self, log: EventLog, conversation_id: str, *, depth: int = 256) -> None:
        self._log = log
        self._conversation_id = conversation_id
        self._depth = depth
        self._unfinished: deque[asyncio.Future[Event]] = deque()
        self._failed: BaseException | None = None
        self.last_seq = 0

    async def put(self, event: Event) -> None:
        """Submit ``event``; wait only while ``depth`` appends are unfinished."""
        unfinished = self._unfinished
        while unfinished and unfinished[0].done():
            self._retire(unfinished.popleft())
        self._check()
        future = self._log.submit(self._conversation_id, event)
        if future.done():  # an in-process log stores at once
            self.last_seq = future.result()["seq"]
            return
        unfinished.append(future)
        while len(unfinished) >= self._depth:
            await asyncio.wait([unfinished[0]])
            self._retire(unfinished.popleft())
            self._check()

    async def drain(self) -> None:
        """Wait until every submitted event is stored; raise the first failure."""
        while self._unfinished:
            future = self._unfinished[0]
            if not future.done():
                await asyncio.wait([future])
            self._retire(self._unfinished.popleft())
            self._check()
        self._check()

    def _retire(self, future: asyncio.Future[Event]) -> None:
        # Appends finish in order (a log fails what follows a failed one), so
        # looking at each as it leaves the head finds the first failure. No
        # done-callback per append: that was a loop callback per token.
        if future.cancelled():
            failure: BaseException | None = RuntimeError("an append was cancelled")
        else:
            failure = future.exception()
        if failure is None:
            self.last_seq = future.result()["seq"]
        elif self._failed is None:
            self._failed = failure

    def _check(self) -> None:
        if self._failed is not None:
            # The writer stops here: what is still in flight is retrieved when
            # it ends, so no failure is left "never retrieved".
            while self._unfinished:
                self._unfinished.popleft().add_done_callback(_retrieve)
            raise self._failed


def _retrieve(future: asyncio.Future[Event]) -> None:
    if not future.cancelled():
        future.exception()


async def follow(log: EventLog, conversation_id: str, after: int) -> AsyncIterator[Event]:
    """Yield every event with ``seq > after``: the backlog, then live, no gap, no duplicate.

    Subscribes *before* reading the backlog so nothing appended in between is
    missed, and drops live events already covered by the backlog. A lagging
    subscription is replaced and the gap refilled from the log. Raises
    :class:`ResumeGap` when ``after`` is older than what the log retains.
    """
    batches = follow_batches(log, conversation_id, after)
    try:
        async for batch in batches:
            for event in batch:
                yield event
    finally:
        await batches.aclose()  # releases the subscription now, not at garbage collection


async def follow_batches(
    log: EventLog, conversation_id: str, after: int
) -> AsyncGenerator[list[Event], None]:
    """:func:`follow`, a batch at a time: each batch is what was ready at once.

    For a writer that can send several events for the price of one (a socket
    gets them in one write): the backlog comes as one batch, and each live
    batch is every event buffered by the time the reader got to it.
    """
    last = after
    while True:
        sub = await log.subscribe(conversation_id)
        try:
            backlog = await log.replay(conversation_id, last)
            if backlog:
                last = backlog[-1]["seq"]
                yield backlog
            while True:
                try:
                    first = await sub.get()
                except Lagged:
                    break  # resubscribe and refill from the log
                batch: list[Event] = []
                hole = False
                for event in (first, *sub.ready()):
                    if event["seq"] <= last:
                        continue
                    if event["seq"] != last + 1:
                        hole = True  # a hole in the live stream: refill from the log
                        break
                    last = event["seq"]
                    batch.append(event)
                if batch:
                    yield batch
                if hole:
                    break
        finally:
            await sub.close()
