"""Hot state base: what replicas must agree on that is not durable data.

- locks with an owner and a TTL (one reply per conversation across replicas;
  a replica that dies loses its lock when the TTL runs out),
- fixed-window rate counters,
- presence (which connections are on which conversation, on which replica),
- small JSON records with an optional TTL (e.g. the reply in flight),
- broadcast control messages (e.g. "cancel the reply of conversation X").

In-process for the embedded default, Redis in production; one contract suite
(tests/test_hotstate_contract.py) covers both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any


class HotState(ABC):
    @abstractmethod
    async def acquire_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Take the lock if it is free (or already ours); True on success."""

    async def acquire_lock_and_get(
        self, name: str, owner: str, ttl_seconds: float, key: str
    ) -> tuple[bool, dict[str, Any] | None]:
        """:meth:`acquire_lock`, then (only if taken) :meth:`get` ``key``.

        Backends over a network do both in one round trip, read after the
        lock is taken.
        """
        if not await self.acquire_lock(name, owner, ttl_seconds):
            return False, None
        return True, await self.get(key)

    @abstractmethod
    async def refresh_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Extend our lock; False if it is no longer ours."""

    @abstractmethod
    async def release_lock(
        self,
        name: str,
        owner: str,
        *,
        owned_records: Sequence[str] = (),
        records: Sequence[str] = (),
    ) -> bool:
        """Release the lock if it is ours (never someone else's); True if it was.

        ``owned_records`` are deleted with it, only if it was ours (what its
        owner kept beside it); ``records`` are deleted either way. Backends
        over a network do all of it in one round trip.
        """

    @abstractmethod
    async def lock_owner(self, name: str) -> str | None: ...

    @abstractmethod
    async def hit(self, key: str, limit: int, window_seconds: float) -> bool:
        """Count one event in the current window; False once ``limit`` is exceeded."""

    @abstractmethod
    async def set_presence(
        self, group: str, member: str, info: dict[str, Any], ttl_seconds: float
    ) -> None: ...

    @abstractmethod
    async def clear_presence(self, group: str, member: str) -> None: ...

    @abstractmethod
    async def presence(self, group: str) -> dict[str, dict[str, Any]]:
        """Live members of ``group`` (expired ones are left out)."""

    @abstractmethod
    async def put(
        self, key: str, value: dict[str, Any], ttl_seconds: float | None = None
    ) -> None: ...

    @abstractmethod
    async def get(self, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        """Send ``message`` to every current subscriber of ``channel``, on every replica."""

    @abstractmethod
    def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        """Messages published to ``channel`` from now on (best effort, at most once)."""

    async def ping(self) -> None:
        """Raise if the backend cannot be reached."""

    async def close(self) -> None: ...
