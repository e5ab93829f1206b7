"""Hot state on Redis: shared by every replica."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.exceptions import RedisError

from memory.hotstate.base import HotState

# Compare-and-act scripts: a lock is only ever extended or deleted by its owner.
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: the lock, then ARGV[2] records deleted only if the lock is ours, then
# records deleted either way.
_RELEASE = """
local ours = redis.call('GET', KEYS[1]) == ARGV[1]
local owned = tonumber(ARGV[2])
if ours then
  redis.call('DEL', unpack(KEYS, 1, 1 + owned))
end
if #KEYS > 1 + owned then
  redis.call('DEL', unpack(KEYS, 2 + owned))
end
return ours and 1 or 0
"""
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


# A fixed-window counter: counted, and given its expiry when new. A script
# costs the client half of what a MULTI/EXEC pipeline of the two commands does.
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return count
"""

# _ACQUIRE, and when taken the record KEYS[2] (or false), in one call.
_ACQUIRE_GET = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, redis.call('GET', KEYS[2])}
end
return {0}
"""


class RedisHotState(HotState):
    def __init__(self, redis: Any, *, prefix: str = "salon:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)
        self._acquire_get = redis.register_script(_ACQUIRE_GET)
        self._refresh = redis.register_script(_REFRESH)
        self._release = redis.register_script(_RELEASE)
        self._hit = redis.register_script(_HIT)

    def _k(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    async def acquire_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        ms = max(1, int(ttl_seconds * 1000))
        return bool(await self._acquire(keys=[self._k("lock", name)], args=[owner, ms]))

    async def acquire_lock_and_get(
        self, name: str, owner: str, ttl_seconds: float, key: str
    ) -> tuple[bool, dict[str, Any] | None]:
        ms = max(1, int(ttl_seconds * 1000))
        reply = await self._acquire_get(
            keys=[self._k("lock", name), self._k("rec", key)], args=[owner, ms]
        )
        if not int(reply[0]):
            return False, None
        raw = reply[1] if len(reply) > 1 else None
        return True, None if raw is None else dict(json.loads(raw))

    async def refresh_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        ms = max(1, int(ttl_seconds * 1000))
        return bool(await self._refresh(keys=[self._k("lock", name)], args=[owner, ms]))

    async def release_lock(
        self,
        name: str,
        owner: str,
        *,
        owned_records: Sequence[str] = (),
        records: Sequence[str] = (),
    ) -> bool:
        keys = [self._k("lock", name)]
        keys += [self._k("rec", key) for key in owned_records]
        keys += [self._k("rec", key) for key in records]
        return bool(await self._release(keys=keys, args=[owner, len(owned_records)]))

    async def lock_owner(self, name: str) -> str | None:
        value = await self.redis.get(self._k("lock", name))
        return str(value) if value is not None else None

    async def hit(self, key: str, limit: int, window_seconds: float) -> bool:
        window = int(time.time() // window_seconds)
        counter = self._k("rate", f"{key}:{window}")
        count = await self._hit(keys=[counter], args=[int(window_seconds) + 1])
        return int(count) <= limit

    async def set_presence(
        self, group: str, member: str, info: dict[str, Any], ttl_seconds: float
    ) -> None:
        key = self._k("presence", group)
        value = json.dumps({"info": info, "expires": time.time() + ttl_seconds})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, member, value)
            pipe.expire(key, int(ttl_seconds) + 1)
            await pipe.execute()

    async def clear_presence(self, group: str, member: str) -> None:
        await self.redis.hdel(self._k("presence", group), member)

    async def presence(self, group: str) -> dict[str, dict[str, Any]]:
        key = self._k("presence", group)
        now = time.time()
        live: dict[str, dict[str, Any]] = {}
        stale: list[str] = []
        for member, raw in (await self.redis.hgetall(key)).items():
            item = json.loads(raw)
            if item["expires"] <= now:
                stale.append(member)
            else:
                live[member] = item["info"]
        if stale:
            await self.redis.hdel(key, *stale)
        return live

    async def put(self, key: str, value: dict[str, Any], ttl_seconds: float | None = None) -> None:
        px = None if ttl_seconds is None else max(1, int(ttl_seconds * 1000))
        await self.redis.set(self._k("rec", key), json.dumps(value), px=px)

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self._k("rec", key))
        return None if raw is None else dict(json.loads(raw))

    async def delete(self, key: str) -> None:
        await self.redis.delete(self._k("rec", key))

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await self.redis.publish(self._k("chan", channel), json.dumps(message))

    async def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        """Messages on ``channel``; reconnects by itself when Redis restarts."""
        backoff = 0.1
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._k("chan", channel))
                backoff = 0.1
                while True:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is not None and msg.get("type") == "message":
                        yield json.loads(msg["data"])
            except (RedisError, OSError):
                pass  # a Redis outage: reconnect below
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()
