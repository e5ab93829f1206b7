"""One Redis connection pool per process, with reconnect-and-retry built in."""

from __future__ import annotations

from typing import Any


def create_redis(url: str, *, pool_size: int = 256, **overrides: Any) -> Any:
    """A ``redis.asyncio.Redis`` for ``url``; names the extra to install if redis is missing.

    Its pool holds up to ``pool_size`` connections; a command that finds them
    all busy waits for one (up to the socket timeout) instead of failing at
    once, as redis-py's default pool does past 100 concurrent commands.
    """
    try:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry  # the sync Retry never retries async calls
        from redis.backoff import ExponentialBackoff
        from redis.exceptions import ConnectionError, TimeoutError
    except ImportError as exc:  # pragma: no cover - depends on install
        raise RuntimeError(
            "Redis support needs the 'redis' extra: pip install 'salon[redis]'"
        ) from exc
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "health_check_interval": 15,
        # Short retries ride out a Redis restart without hanging a request for long.
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        "retry_on_error": [ConnectionError, TimeoutError],
    }
    options.update(overrides)
    if pool_size < 1:
        raise ValueError(f"SALON_REDIS_POOL_SIZE must be at least 1, got {pool_size}")
    pool = BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=options["socket_timeout"], **options
    )
    return Redis.from_pool(pool)
