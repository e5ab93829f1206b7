"""In-process hot state for the embedded default (one server process)."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from memory.hotstate.base import HotState


class InProcessHotState(HotState):
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.monotonic
        self._locks: dict[str, tuple[str, float]] = {}
        self._counters: dict[str, tuple[int, int]] = {}
        self._presence: dict[str, dict[str, tuple[dict[str, Any], float]]] = {}
        self._records: dict[str, tuple[dict[str, Any], float | None]] = {}
        self._channels: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}

    def _live_lock(self, name: str) -> str | None:
        held = self._locks.get(name)
        if held is None:
            return None
        if held[1] <= self._clock():
            del self._locks[name]
            return None
        return held[0]

    async def acquire_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        current = self._live_lock(name)
        if current not in (None, owner):
            return False
        self._locks[name] = (owner, self._clock() + ttl_seconds)
        return True

    async def refresh_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        if self._live_lock(name) != owner:
            return False
        self._locks[name] = (owner, self._clock() + ttl_seconds)
        return True

    async def release_lock(
        self,
        name: str,
        owner: str,
        *,
        owned_records: Sequence[str] = (),
        records: Sequence[str] = (),
    ) -> bool:
        ours = self._live_lock(name) == owner
        if ours:
            del self._locks[name]
            for key in owned_records:
                self._records.pop(key, None)
        for key in records:
            self._records.pop(key, None)
        return ours

    async def lock_owner(self, name: str) -> str | None:
        return self._live_lock(name)

    async def hit(self, key: str, limit: int, window_seconds: float) -> bool:
        window = int(self._clock() // window_seconds)
        current_window, count = self._counters.get(key, (window, 0))
        if current_window != window:
            count = 0
        count += 1
        self._counters[key] = (window, count)
        if len(self._counters) > 100_000:  # forget stale windows
            self._counters = {k: v for k, v in self._counters.items() if v[0] == window}
        return count <= limit

    async def set_presence(
        self, group: str, member: str, info: dict[str, Any], ttl_seconds: float
    ) -> None:
        self._presence.setdefault(group, {})[member] = (dict(info), self._clock() + ttl_seconds)

    async def clear_presence(self, group: str, member: str) -> None:
        members = self._presence.get(group)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self._presence[group]

    async def presence(self, group: str) -> dict[str, dict[str, Any]]:
        now = self._clock()
        members = self._presence.get(group, {})
        for member in [m for m, (_, exp) in members.items() if exp <= now]:
            del members[member]
        return {m: dict(info) for m, (info, _) in members.items()}

    async def put(self, key: str, value: dict[str, Any], ttl_seconds: float | None = None) -> None:
        expires = None if ttl_seconds is None else self._clock() + ttl_seconds
        self._records[key] = (copy.deepcopy(value), expires)

    async def get(self, key: str) -> dict[str, Any] | None:
        item = self._records.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= self._clock():
            del self._records[key]
            return None
        return copy.deepcopy(item[0])

    async def delete(self, key: str) -> None:
        self._records.pop(key, None)

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        for queue in list(self._channels.get(channel, ())):
            queue.put_nowait(copy.deepcopy(message))

    async def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._channels.setdefault(channel, set()).add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._channels[channel].discard(queue)
