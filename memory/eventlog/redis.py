"""The event log on Redis Streams, shared by every replica.

Per conversation: a stream ``salon:ev:<id>`` whose entry ids are ``<seq>-0``
(so replay after N is one XRANGE) and a counter ``salon:seq:<id>``. One Lua
script gives the next seq, appends, trims by length and age, and publishes the
event on ``salon:live:<id>``, atomically. Each process holds ONE pub/sub
connection and fans live events out to its local subscribers; pub/sub may drop
messages during a reconnect, which is fine: ``follow()`` notices the hole by
``seq`` (or the Lagged signal sent on reconnect) and refills from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import structlog
from redis.exceptions import NoScriptError, RedisError

from memory.eventlog.base import (
    Event,
    EventLog,
    LiveBuffer,
    LoggedEvent,
    ResumeGap,
    Subscription,
)

log = structlog.get_logger(__name__)

_APPEND = """
local seq = redis.call('INCR', KEYS[2])
if seq <= tonumber(ARGV[7]) then
  -- Redis lost the counter (restart): never reuse a seq this process issued
  seq = tonumber(ARGV[7]) + 1
  redis.call('SET', KEYS[2], seq)
end
local now = tonumber(ARGV[2])
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], seq .. '-0', 'e', ARGV[1], 't', ARGV[2])
local horizon = now - tonumber(ARGV[4])
-- Look at the oldest entry alone first: it is almost never expired, and
-- reading 64 entries on every append was most of Redis's CPU while streaming.
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local oldest = head[1]
if oldest ~= nil then
  local fields = oldest[2]
  for i = 1, #fields, 2 do
    if fields[i] == 't' and tonumber(fields[i + 1]) < horizon then
      head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 64)
    end
  end
end
local keep_from = nil
for _, entry in ipairs(head) do
  local fields = entry[2]
  local ts = nil
  for i = 1, #fields, 2 do
    if fields[i] == 't' then ts = tonumber(fields[i + 1]) end
  end
  if ts ~= nil and ts < horizon then
    keep_from = tonumber(string.match(entry[1], '^(%d+)')) + 1
  else
    break
  end
end
if keep_from ~= nil then
  redis.call('XTRIM', KEYS[1], 'MINID', keep_from .. '-0')
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[6], seq .. ' ' .. ARGV[1])
return seq
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

    async def close(self) -> None:
        await self._owner._unsubscribe(self)


class RedisEventLog(EventLog):
    def __init__(
        self,
        redis: Any,
        *,
        max_events: int = 5000,
        ttl_seconds: float = 900.0,
        seq_ttl_seconds: float = 30 * 86400,
        subscriber_buffer: int = 10_000,
        prefix: str = "salon:",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.redis = redis
        self.max_events = max_events
        self.ttl_seconds = ttl_seconds
        self.seq_ttl_ms = int(seq_ttl_seconds * 1000)
        self.subscriber_buffer = subscriber_buffer
        self.prefix = prefix
        self._clock = clock or time.time
        self._append = redis.register_script(_APPEND)
        self._floor = redis.register_script(_FLOOR)
        self._subs: dict[str, set[_RedisSubscription]] = {}
        self._high: dict[str, int] = {}
        self._confirmed: dict[str, asyncio.Event] = {}
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._dirty = False  # the pub/sub connection must be (re)subscribed
        self._lock = asyncio.Lock()
        # Appends waiting for this loop turn's pipeline, and pipelines in flight.
        self._batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    # -- keys -------------------------------------------------------------------

    def _stream(self, cid: str) -> str:
        return f"{self.prefix}ev:{cid}"

    def _seq(self, cid: str) -> str:
        return f"{self.prefix}seq:{cid}"

    def _channel(self, cid: str) -> str:
        return f"{self.prefix}live:{cid}"

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- writing ----------------------------------------------------------------

    async def append(self, conversation_id: str, event: Event) -> Event:
        """Append (one Lua script call), batched with the appends of other replies.

        Appends issued during one turn of the event loop (100 replies streaming
        at once issue many) go to Redis as one pipeline: one write and one
        round trip instead of one each, in the order they were issued, so one
        conversation's events keep their order. A lone append waits for
        nothing but that one loop turn.
        """
        body = {k: v for k, v in event.items() if k not in ("seq", "conversation_id")}
        payload = json.dumps(body, separators=(",", ":"))
        keys = [self._stream(conversation_id), self._seq(conversation_id)]
        args = [
            payload,
            self._now_ms(),
            self.max_events,
            int(self.ttl_seconds * 1000),
            self.seq_ttl_ms,
            self._channel(conversation_id),
            self._high.get(conversation_id, 0),
        ]
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._batch.append((keys, args, done))
        if len(self._batch) == 1:
            loop.call_soon(self._send_batch)
        seq = int(await done)
        self._remember(conversation_id, seq)
        return {**body, "conversation_id": conversation_id, "seq": seq}

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.create_task(self._run_batch(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _run_batch(
        self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]
    ) -> None:
        try:
            if len(batch) == 1:
                keys, args, _ = batch[0]
                results: list[Any] = [await self._append(keys=keys, args=args)]
            else:
                # EVALSHA by hand: a Script called on a pipeline makes every
                # execute() ask SCRIPT EXISTS first, a second round trip.
                pipe = self.redis.pipeline(transaction=False)
                for keys, args, _ in batch:
                    pipe.evalsha(self._append.sha, len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
                if any(isinstance(r, NoScriptError) for r in results):
                    # Redis restarted and lost its scripts: these calls load it again.
                    for i, (keys, args, _) in enumerate(batch):
                        if isinstance(results[i], NoScriptError):
                            try:
                                results[i] = await self._append(keys=keys, args=args)
                            except RedisError as exc:
                                results[i] = exc
        except BaseException as exc:  # the connection failed: every caller hears it
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(exc if isinstance(exc, Exception) else RedisError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, done), result in zip(batch, results, strict=True):
            if done.done():
                continue  # its caller was cancelled
            if isinstance(result, Exception):
                done.set_exception(result)
            else:
                done.set_result(result)

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
        return sub

    async def _unsubscribe(self, sub: _RedisSubscription) -> None:
        async with self._lock:
            subs = self._subs.get(sub.conversation_id)
            if subs is None:
                return
            subs.discard(sub)
            if not subs:
                del self._subs[sub.conversation_id]
                self._confirmed.pop(sub.conversation_id, None)
                if self._pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await self._pubsub.unsubscribe(self._channel(sub.conversation_id))

    async def _ensure_reader(self) -> None:
        if self._pubsub is None:
            self._pubsub = self.redis.pubsub()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_loop(), name="eventlog-pubsub")

    async def _read_loop(self) -> None:
        prefix_len = len(self.prefix) + len("live:")
        backoff = 0.1
        while True:
            try:
                if self._dirty:
                    await self._resubscribe()
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
                    if confirmed is not None:
                        confirmed.set()
                elif msg["type"] == "message":
                    seq_text, _, payload = msg["data"].partition(" ")
                    event = LoggedEvent.placed(payload, cid, int(seq_text))
                    for sub in list(self._subs.get(cid, ())):
                        sub.offer(event)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("eventlog_pubsub_lost", error=repr(exc))
                await self._reset_connection()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

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

        Raises on failure so the read loop retries with backoff; ``_dirty``
        stays set until it works.
        """
        async with self._lock:
            channels = [self._channel(cid) for cid in self._subs]
            for cid in self._subs:
                self._confirmed[cid] = asyncio.Event()
            if channels:
                await self._pubsub.subscribe(*channels)
            self._dirty = False

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        if self._flushing:  # appends already sent: let their callers hear back
            await asyncio.gather(*self._flushing, return_exceptions=True)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
