"""memory/redis_client.py: the shared Redis client every Redis backend uses."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from memory.redis_client import create_redis


async def test_more_concurrent_commands_than_connections_wait_for_one(redis_server: Any) -> None:
    """Past the pool size a command waits for a free connection instead of failing."""
    redis = create_redis(redis_server.url, pool_size=4, client_name=f"pool-{time.time_ns()}")
    try:
        start = time.monotonic()
        # Each holds a connection for 0.1 s: 40 of them over 4 connections.
        results = await asyncio.gather(
            *(redis.blpop([f"never:{i}"], timeout=0.1) for i in range(40))
        )
        assert results == [None] * 40
        assert time.monotonic() - start >= 0.9  # they took turns, four at a time
        name = await redis.client_getname()
        ours = [c for c in await redis.client_list() if c["name"] == name]
        assert 1 <= len(ours) <= 4
    finally:
        await redis.aclose()


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="SALON_REDIS_POOL_SIZE"):
        create_redis("redis://localhost:1/0", pool_size=0)
