"""The event log on Redis Streams, shared by every replica.

Per conversation: a stream ``salon:ev:<id>`` whose entry ids are ``<seq>-0``
(so replay after N is one XRANGE), a counter ``salon:seq:<id>``, and the
replicas that follow it live, ``salon:fl:<id>``. One Lua script call appends
a whole batch of events (every append of one event-loop turn, across
conversations): it gives the seqs, appends, trims by length and age, and,
only when another replica follows the conversation, publishes the batch on
``salon:live:<id>``, atomically. The appending replica hands the events to its
own followers itself, without a round trip through pub/sub.

Each process holds ONE pub/sub connection and fans other replicas' events out
to its local subscribers; pub/sub may drop messages during a reconnect, which
is fine: ``follow()`` notices the hole by ``seq`` (or the Lagged signal sent on
reconnect) and refills from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from redis.exceptions import RedisError

from memory.eventlog.base import (
    Event,
    EventLog,
    LiveBuffer,
    LoggedEvent,
    ResumeGap,
    Subscription,
    position_prefix,
    to_json,
)

log = structlog.get_logger(__name__)

_APPEND = """
-- One call appends a whole batch (the appends of one event-loop turn).
-- KEYS, three per conversation: its stream, its seq counter, its followers
-- (a sorted set: replica -> deadline in ms).
-- ARGV: now ms, max events, ttl ms, seq counter ttl ms, the appending replica,
-- then per conversation: its live channel, the seq floor this replica knows,
-- n, and its n event payloads joined by newlines (event JSON has none: one
-- argument instead of n costs the client less to pack; it is also the body of
-- what is published). Returns the seqs given, in the order of the payloads.
local now, maxlen, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local origin = ARGV[5]
local horizon = now - ttl
local seqs = {}
local a = 6
for i = 1, #KEYS / 3 do
  local stream, counter, followers = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local channel, floor, n = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local first = redis.call('INCRBY', counter, n) - n + 1
  if first == 1 then
    -- A new counter, or one Redis lost (restart, eviction) while the stream
    -- survived: stay above what the stream holds, so XADD cannot fail (and
    -- fail the whole batch).
    local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
    if top ~= nil then
      floor = math.max(floor, tonumber(string.match(top[1], '^(%d+)')))
    end
  end
  if first <= floor then
    -- Redis lost the counter (restart): never reuse a seq this replica issued
    first = floor + 1
    redis.call('SET', counter, first + n - 1)
  end
  local body = ARGV[a]
  a = a + 1
  local at = 1
  for j = 0, n - 1 do
    local stop = string.find(body, '\\n', at, true) or (#body + 1)
    redis.call('XADD', stream, (first + j) .. '-0', 'e', string.sub(body, at, stop - 1), 't', ARGV[1])
    at = stop + 1
    seqs[#seqs + 1] = first + j
  end
  redis.call('XTRIM', stream, 'MAXLEN', maxlen)
  -- Look at the oldest entry alone first: it is almost never expired, and
  -- reading 64 entries on every append was most of Redis's CPU while streaming.
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  local oldest = head[1]
  if oldest ~= nil then
    local fields = oldest[2]
    for f = 1, #fields, 2 do
      if fields[f] == 't' and tonumber(fields[f + 1]) < horizon then
        head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 64)
      end
    end
  end
  local keep_from = nil
  for _, entry in ipairs(head) do
    local fields = entry[2]
    local ts = nil
    for f = 1, #fields, 2 do
      if fields[f] == 't' then ts = tonumber(fields[f + 1]) end
    end
    if ts ~= nil and ts < horizon then
      keep_from = tonumber(string.match(entry[1], '^(%d+)')) + 1
    else
      break
    end
  end
  if keep_from ~= nil then
    redis.call('XTRIM', stream, 'MINID', keep_from .. '-0')
  end
  redis.call('PEXPIRE', stream, ttl)
  redis.call('PEXPIRE', counter, ARGV[4])
  -- Publish only when another replica follows the conversation: the appending
  -- replica hands the events to its own followers itself.
  redis.call('ZREMRANGEBYSCORE', followers, '-inf', '(' .. ARGV[1])
  for _, replica in ipairs(redis.call('ZRANGE', followers, 0, -1)) do
    if replica ~= origin then
      redis.call('PUBLISH', channel, origin .. ' ' .. first .. '\\n' .. body)
      break
    end
  end
end
return seqs
"""

_FLOOR = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  -- what is retained no longer joins up with the head: resumes must gap
  redis.call('DEL', KEYS[2])
end
return 0
"""


class _RedisSubscription(Subscription):
    def __init__(self, owner: RedisEventLog, conversation_id: str, maxsize: int) -> None:
        self._owner = owner
        self.conversation_id = conversation_id
        self._buffer = LiveBuffer(maxsize)
        self.offer = self._buffer.offer
        self.signal_lag = self._buffer.signal_lag

    async def get(self) -> Event:
        return await self._buffer.get()

    def ready(self) -> list[Event]:
        return self._buffer.take_ready()

    async def close(self) -> None:
        await self._owner._unsubscribe(self)


class _Append:
    """One append waiting for its batch: the event as text and dict, and its caller."""

    __slots__ = ("body", "conversation_id", "done", "event")

    def __init__(
        self, conversation_id: str, event: LoggedEvent, body: str, done: asyncio.Future[Event]
    ) -> None:
        self.conversation_id = conversation_id
        self.event = event
        self.body = body
        self.done = done


class RedisEventLog(EventLog):
    """The event log of every replica, on Redis Streams; see the module docstring.

    ``followers_ttl_seconds``: how long a replica stays listed as following a
    conversation without renewing (it renews every third of that while it
    follows). A replica that stops renewing (it died) only costs publishes
    nobody reads until then.
    """

    def __init__(
        self,
        redis: Any,
        *,
        max_events: int = 5000,
        ttl_seconds: float = 900.0,
        seq_ttl_seconds: float = 30 * 86400,
        subscriber_buffer: int = 10_000,
        followers_ttl_seconds: float = 600.0,
        prefix: str = "salon:",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.redis = redis
        self.max_events = max_events
        self.ttl_seconds = ttl_seconds
        self.seq_ttl_ms = int(seq_ttl_seconds * 1000)
        self.subscriber_buffer = subscriber_buffer
        self.followers_ttl_ms = int(followers_ttl_seconds * 1000)
        self.prefix = prefix
        # Names this process in follower sets and in what it publishes.
        self.origin = uuid.uuid4().hex
        self._clock = clock or time.time
        self._append = redis.register_script(_APPEND)
        self._floor = redis.register_script(_FLOOR)
        self._subs: dict[str, set[_RedisSubscription]] = {}
        self._high: dict[str, int] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._dirty = False  # the pub/sub connection must be (re)subscribed
        self._renewed = time.monotonic()
        self._lock = asyncio.Lock()
        # Appends waiting for this loop turn's batch, and batches in flight;
        # conversations with a batch in flight, and their appends waiting for it.
        self._batch: list[_Append] = []
        self._scheduled = False
        self._flushing: set[asyncio.Task[None]] = set()
        self._in_flight: set[str] = set()
        self._held: dict[str, list[_Append]] = {}

    # -- keys -------------------------------------------------------------------

    def _stream(self, cid: str) -> str:
        return f"{self.prefix}ev:{cid}"

    def _seq(self, cid: str) -> str:
        return f"{self.prefix}seq:{cid}"

    def _channel(self, cid: str) -> str:
        return f"{self.prefix}live:{cid}"

    def _followers(self, cid: str) -> str:
        return f"{self.prefix}fl:{cid}"

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- writing ----------------------------------------------------------------

    async def append(self, conversation_id: str, event: Event) -> Event:
        """Append, batched with every other append of this event-loop turn.

        Appends issued during one turn of the loop (100 replies streaming at
        once issue many) go to Redis as ONE script call: one write, one round
        trip and one reply to parse instead of one each. This replica's own
        followers get the events from here; Redis publishes them only when
        another replica follows the conversation too.
        """
        return await self.submit(conversation_id, event)

    def submit(self, conversation_id: str, event: Event) -> asyncio.Future[Event]:
        """Like :meth:`append` without waiting; a conversation's events keep their order.

        A conversation has at most one batch in flight: its events submitted
        meanwhile wait and go together in the next one, so batches sent on
        different pooled connections can never store them out of order.
        """
        stored = LoggedEvent(event)  # given its position when the batch returns
        if "seq" in stored or "conversation_id" in stored:  # a logged event, logged again
            stored.pop("seq", None)
            stored.pop("conversation_id", None)
        body = to_json(stored)
        done: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._batch.append(_Append(conversation_id, stored, body, done))
        self._schedule()
        return done

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send_batch)

    def _send_batch(self) -> None:
        self._scheduled = False
        batch, self._batch = self._batch, []
        ready: list[_Append] = []
        for item in batch:
            cid = item.conversation_id
            if cid in self._in_flight:  # after its batch in flight returns
                self._held.setdefault(cid, []).append(item)
            else:
                ready.append(item)
        if not ready:
            return
        cids = {item.conversation_id for item in ready}
        self._in_flight |= cids
        task = asyncio.create_task(self._run_batch(ready, cids))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _run_batch(self, batch: list[_Append], cids: set[str]) -> None:
        failure: BaseException | None = None
        try:
            await self._store_batch(batch)
        except BaseException as exc:  # the connection failed: every caller hears it
            failure = exc
            self._fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._in_flight -= cids
            if failure is not None:
                # What was submitted after a failed event is not stored either:
                # a conversation's log never skips one of its events.
                doomed = [item for cid in cids for item in self._held.pop(cid, ())]
                doomed += [item for item in self._batch if item.conversation_id in cids]
                self._batch = [item for item in self._batch if item.conversation_id not in cids]
                self._fail(doomed, failure)
            else:
                released = [item for cid in cids for item in self._held.pop(cid, ())]
                if released:  # ahead of their conversations' events submitted since
                    self._batch = released + self._batch
                    self._schedule()

    async def _store_batch(self, batch: list[_Append]) -> None:
        by_conversation: dict[str, list[_Append]] = {}
        for item in batch:
            by_conversation.setdefault(item.conversation_id, []).append(item)
        keys: list[str] = []
        args: list[Any] = [
            self._now_ms(),
            self.max_events,
            int(self.ttl_seconds * 1000),
            self.seq_ttl_ms,
            self.origin,
        ]
        for cid, items in by_conversation.items():
            keys += (self._stream(cid), self._seq(cid), self._followers(cid))
            args += (
                self._channel(cid),
                self._high.get(cid, 0),
                len(items),
                "\n".join([item.body for item in items]),
            )
        stored = await self._append(keys=keys, args=args)
        if len(stored) != len(batch):  # every caller hears it, none gets a wrong seq
            raise RedisError(f"append script returned {len(stored)} seqs for {len(batch)} events")
        seqs = iter(stored)
        for cid, items in by_conversation.items():
            prefix = position_prefix(cid)
            subs = self._subs.get(cid, ())
            seq = 0
            for item in items:
                seq = int(next(seqs))
                event = item.event
                event.place(item.body, cid, prefix, seq)
                for sub in subs:
                    sub.offer(event)
                if not item.done.done():  # else its caller was cancelled
                    item.done.set_result(event)
            self._remember(cid, seq)

    @staticmethod
    def _fail(items: list[_Append], exc: BaseException) -> None:
        failure = exc if isinstance(exc, Exception) else RedisError(repr(exc))
        for item in items:
            if not item.done.done():
                item.done.set_exception(failure)

    def _remember(self, conversation_id: str, seq: int) -> None:
        # The highest seq this process issued per conversation, bounded: the
        # floor for appends after Redis lost its counters.
        self._high.pop(conversation_id, None)
        self._high[conversation_id] = seq
        if len(self._high) > 50_000:
            del self._high[next(iter(self._high))]

    async def ensure_floor(self, conversation_id: str, seq: int) -> None:
        if seq > 0:
            if seq > self._high.get(conversation_id, 0):
                self._remember(conversation_id, seq)
            await self._floor(
                keys=[self._seq(conversation_id), self._stream(conversation_id)],
                args=[seq, self.seq_ttl_ms],
            )

    async def forget(self, conversation_id: str) -> None:
        await self.redis.delete(self._stream(conversation_id))

    # -- reading ----------------------------------------------------------------

    async def latest_seq(self, conversation_id: str) -> int:
        value = await self.redis.get(self._seq(conversation_id))
        return int(value or 0)

    async def replay(self, conversation_id: str, after: int) -> list[Event]:
        latest = await self.latest_seq(conversation_id)
        if after > latest:
            raise ResumeGap(conversation_id, after, latest + 1, latest)
        if after == latest:
            return []
        entries = await self.redis.xrange(
            self._stream(conversation_id), min=f"{after + 1}-0", max="+"
        )
        horizon = self._now_ms() - int(self.ttl_seconds * 1000)
        events = [
            self._decode(conversation_id, entry_id, fields)
            for entry_id, fields in entries
            if int(fields.get("t", 0)) >= horizon
        ]
        seqs = [e["seq"] for e in events]
        # Contiguous from after+1 through at least the head we read: anything
        # less means events were lost (trimmed, expired, or Redis restarted).
        if (
            not seqs
            or seqs[0] != after + 1
            or seqs[-1] < latest
            or seqs[-1] - seqs[0] + 1 != len(seqs)
        ):
            first = seqs[0] if seqs else latest + 1
            raise ResumeGap(conversation_id, after, first, latest)
        return events

    @staticmethod
    def _decode(cid: str, entry_id: str, fields: dict[str, str]) -> Event:
        seq = int(entry_id.split("-", 1)[0])
        return LoggedEvent.placed(fields["e"], cid, seq)

    # -- live -------------------------------------------------------------------

    async def subscribe(self, conversation_id: str) -> Subscription:
        """Follow live: this replica's own appends directly, other replicas' by pub/sub.

        Returns once Redis has confirmed the channel and lists this replica
        among the conversation's followers, so that every event appended after
        the caller reads the backlog reaches it.
        """
        sub = _RedisSubscription(self, conversation_id, self.subscriber_buffer)
        async with self._lock:
            await self._ensure_reader()
            subs = self._subs.get(conversation_id)
            if subs:
                subs.add(sub)
                confirmed = self._confirmed[conversation_id]
            else:
                confirmed = asyncio.Event()
                self._confirmed[conversation_id] = confirmed
                # Registered only once SUBSCRIBE went out: a failure leaves nothing behind.
                try:
                    await self._pubsub.subscribe(self._channel(conversation_id))
                except BaseException:
                    self._confirmed.pop(conversation_id, None)
                    self._dirty = True
                    raise
                self._subs[conversation_id] = {sub}
        # Until Redis confirms the subscription, a publish could be missed; the
        # caller reads the backlog only after this returns.
        try:
            await asyncio.wait_for(confirmed.wait(), 5)
        except TimeoutError:
            sub.signal_lag()  # not confirmed: make follow() re-check the log
        try:
            # Listed after the channel is confirmed: from here on, appends by
            # other replicas are published to us.
            await self._list_as_follower([conversation_id])
        except BaseException:
            await self._unsubscribe(sub)
            raise
        return sub

    async def _list_as_follower(self, conversation_ids: list[str]) -> None:
        deadline = self._now_ms() + self.followers_ttl_ms
        pipe = self.redis.pipeline(transaction=False)
        for cid in conversation_ids:
            key = self._followers(cid)
            pipe.zadd(key, {self.origin: deadline})
            pipe.pexpire(key, self.followers_ttl_ms)
        await pipe.execute()

    async def _renew_followers(self) -> None:
        """List this replica again for every conversation it follows (before its entries expire)."""
        cids = list(self._subs)
        for start in range(0, len(cids), 1000):
            await self._list_as_follower(cids[start : start + 1000])
        self._renewed = time.monotonic()

    async def _unsubscribe(self, sub: _RedisSubscription) -> None:
        async with self._lock:
            subs = self._subs.get(sub.conversation_id)
            if subs is None:
                return
            subs.discard(sub)
            if not subs:
                cid = sub.conversation_id
                del self._subs[cid]
                self._confirmed.pop(cid, None)
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.zrem(self._followers(cid), self.origin)
                if self._pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await self._pubsub.unsubscribe(self._channel(cid))

    async def _ensure_reader(self) -> None:
        if self._pubsub is None:
            self._pubsub = self.redis.pubsub()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_loop(), name="eventlog-pubsub")

    async def _read_loop(self) -> None:
        prefix_len = len(self.prefix) + len("live:")
        renew_every = self.followers_ttl_ms / 3000
        backoff = 0.1
        while True:
            try:
                if self._dirty:
                    await self._resubscribe()
                if time.monotonic() - self._renewed > renew_every:
                    await self._renew_followers()
                if not self._pubsub.subscribed:
                    await asyncio.sleep(0.05)
                    continue
                msg = await self._pubsub.get_message(timeout=1.0)
                backoff = 0.1
                if msg is None:
                    continue
                channel = msg.get("channel", "")
                cid = channel[prefix_len:]
                if msg["type"] == "subscribe":
                    confirmed = self._confirmed.get(cid)
                    if confirmed is None:
                        pass
                    elif confirmed.is_set():
                        # redis-py reconnected and subscribed again by itself:
                        # what was published meanwhile is lost, and a restarted
                        # Redis lost our listing; following again refills from
                        # the stream and lists us again.
                        for sub in list(self._subs.get(cid, ())):
                            sub.signal_lag()
                    else:
                        confirmed.set()
                elif msg["type"] == "message":
                    self._deliver(cid, msg["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("eventlog_pubsub_lost", error=repr(exc))
                await self._reset_connection()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _deliver(self, cid: str, data: str) -> None:
        """Hand a published batch (``origin first-seq``, then one event per line) to followers."""
        head, _, rest = data.partition("\n")
        origin, _, first = head.partition(" ")
        if origin == self.origin:
            return  # our own appends: already handed over when they were made
        subs = self._subs.get(cid)
        if not subs:
            return
        for offset, body in enumerate(rest.split("\n")):
            event = LoggedEvent.placed(body, cid, int(first) + offset)
            for sub in list(subs):
                sub.offer(event)

    async def _reset_connection(self) -> None:
        """A new pub/sub connection; every follower refills from the log meanwhile."""
        async with self._lock:
            old, self._pubsub = self._pubsub, self.redis.pubsub()
            with contextlib.suppress(Exception):
                await old.aclose()
            self._dirty = True
            for sub_set in self._subs.values():
                for sub in sub_set:
                    sub.signal_lag()

    async def _resubscribe(self) -> None:
        """Subscribe the current connection to every channel with local followers.

        Lists this replica as their follower again too (Redis may have lost
        the lists). Raises on failure so the read loop retries with backoff;
        ``_dirty`` stays set until it works.
        """
        async with self._lock:
            channels = [self._channel(cid) for cid in self._subs]
            for cid in self._subs:
                self._confirmed[cid] = asyncio.Event()
            if channels:
                await self._pubsub.subscribe(*channels)
            self._dirty = False
        await self._renew_followers()

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        # Appends already submitted: let their callers hear back (a batch that
        # returns releases the conversation's held appends into a new one).
        while self._flushing or self._batch:
            if self._flushing:
                await asyncio.gather(*self._flushing, return_exceptions=True)
            else:
                await asyncio.sleep(0)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._subs:  # stop others publishing to us
            with contextlib.suppress(Exception):
                pipe = self.redis.pipeline(transaction=False)
                for cid in self._subs:
                    pipe.zrem(self._followers(cid), self.origin)
                await pipe.execute()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
