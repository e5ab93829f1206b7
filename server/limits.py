"""Origin allowlist and a token-bucket rate limiter."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Browsers send Origin; apps and servers usually don't.

    No Origin: allowed (auth still applies). Same host as the request:
    allowed (the console). Otherwise it must be in the allowlist (``*`` = any).
    """
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if "*" in allowed or origin in allowed:
        return True
    netloc = urlsplit(origin).netloc
    return bool(host) and netloc.lower() == (host or "").lower()


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._clock = clock or time.monotonic
        self._last = self._clock()

    def take(self, cost: float = 1.0) -> bool:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False
