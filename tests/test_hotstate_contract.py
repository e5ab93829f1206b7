"""Contract tests for :class:`memory.hotstate.HotState`, run against every backend."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from memory.hotstate import HotState, InProcessHotState


@pytest.fixture(params=["inprocess", "redis"])
async def hot(request: pytest.FixtureRequest) -> AsyncIterator[HotState]:
    if request.param == "redis":
        from memory.hotstate.redis import RedisHotState
        from memory.redis_client import create_redis

        url = request.getfixturevalue("redis_server").url
        state: HotState = RedisHotState(create_redis(url), prefix=f"t{uuid.uuid4().hex[:8]}:")
    else:
        state = InProcessHotState()
    try:
        yield state
    finally:
        await state.close()


async def test_lock_has_one_owner_and_expires(hot: HotState) -> None:
    assert await hot.acquire_lock("conv1", "a", 0.3)
    assert not await hot.acquire_lock("conv1", "b", 0.3)
    assert await hot.acquire_lock("conv1", "a", 0.3)  # re-entrant for the owner
    assert await hot.lock_owner("conv1") == "a"
    await asyncio.sleep(0.45)
    assert await hot.lock_owner("conv1") is None
    assert await hot.acquire_lock("conv1", "b", 5)


async def test_acquire_lock_and_get_reads_the_record_only_with_the_lock(hot: HotState) -> None:
    assert await hot.acquire_lock_and_get("l2", "a", 5, "rec2") == (True, None)
    await hot.put("rec2", {"response_id": "r1", "n": 1})
    # Someone else: not taken, and the record is not read.
    assert await hot.acquire_lock_and_get("l2", "b", 5, "rec2") == (False, None)
    assert await hot.lock_owner("l2") == "a"
    # The owner again (re-entrant): taken, with the record as stored.
    assert await hot.acquire_lock_and_get("l2", "a", 5, "rec2") == (
        True,
        {"response_id": "r1", "n": 1},
    )
    await hot.release_lock("l2", "a")
    assert await hot.acquire_lock_and_get("l2", "b", 5, "rec2") == (
        True,
        {"response_id": "r1", "n": 1},
    )
    assert await hot.lock_owner("l2") == "b"


async def test_only_the_owner_refreshes_or_releases(hot: HotState) -> None:
    assert await hot.acquire_lock("l", "a", 0.3)
    assert not await hot.refresh_lock("l", "b", 10)
    await hot.release_lock("l", "b")
    assert await hot.lock_owner("l") == "a"
    assert await hot.refresh_lock("l", "a", 10)
    await asyncio.sleep(0.4)
    assert await hot.lock_owner("l") == "a"  # refreshed beyond its first TTL
    await hot.release_lock("l", "a")
    assert await hot.lock_owner("l") is None
    assert not await hot.refresh_lock("l", "a", 10)


async def test_release_deletes_the_owners_records_only_when_the_lock_was_ours(
    hot: HotState,
) -> None:
    assert await hot.acquire_lock("l3", "a", 5)
    for key in ("active", "pending1", "pending2"):
        await hot.put(key, {"k": key})
    # Not the owner: the lock and its owner's record stay; the others go anyway.
    released = await hot.release_lock("l3", "b", owned_records=["active"], records=["pending1"])
    assert released is False
    assert await hot.lock_owner("l3") == "a"
    assert await hot.get("active") == {"k": "active"}
    assert await hot.get("pending1") is None
    # The owner: lock and both kinds of record, in one call.
    released = await hot.release_lock("l3", "a", owned_records=["active"], records=["pending2"])
    assert released is True
    assert await hot.lock_owner("l3") is None
    assert await hot.get("active") is None
    assert await hot.get("pending2") is None
    # Nothing to delete and no lock held: False, no error.
    assert await hot.release_lock("l3", "a") is False


async def test_concurrent_acquire_has_exactly_one_winner(hot: HotState) -> None:
    results = await asyncio.gather(*(hot.acquire_lock("race", f"o{i}", 5) for i in range(20)))
    assert sum(results) == 1


async def test_rate_counter(hot: HotState) -> None:
    key = uuid.uuid4().hex
    assert [await hot.hit(key, 3, 60) for _ in range(5)] == [True, True, True, False, False]
    assert await hot.hit(key + "other", 3, 60)


async def test_redis_rate_counter_expires_after_its_window(redis_server: Any) -> None:
    from memory.hotstate.redis import RedisHotState
    from memory.redis_client import create_redis

    client = create_redis(redis_server.url)
    hot = RedisHotState(client, prefix=f"t{uuid.uuid4().hex[:8]}:")
    try:
        assert await hot.hit("k", 5, 3600)
        (counter,) = await client.keys(f"{hot.prefix}rate:k:*")
        assert 0 < await client.ttl(counter) <= 3601  # given its expiry when new...
        await client.expire(counter, 100_000)
        assert await hot.hit("k", 5, 3600)
        assert await client.ttl(counter) > 3601  # ...and not pushed back on each hit
        assert await client.get(counter) == "2"
    finally:
        await hot.close()
        await client.aclose()


async def test_presence(hot: HotState) -> None:
    await hot.set_presence("conv", "c1", {"replica": "r1"}, 10)
    await hot.set_presence("conv", "c2", {"replica": "r2"}, 0.2)
    assert await hot.presence("conv") == {"c1": {"replica": "r1"}, "c2": {"replica": "r2"}}
    await asyncio.sleep(0.3)
    assert await hot.presence("conv") == {"c1": {"replica": "r1"}}
    await hot.clear_presence("conv", "c1")
    assert await hot.presence("conv") == {}


async def test_records(hot: HotState) -> None:
    value: dict[str, Any] = {"response_id": "r", "n": [1, 2]}
    await hot.put("active:x", value)
    got = await hot.get("active:x")
    assert got == value and got is not value
    await hot.put("short", {"a": 1}, ttl_seconds=0.2)
    await asyncio.sleep(0.3)
    assert await hot.get("short") is None
    await hot.delete("active:x")
    assert await hot.get("active:x") is None


async def test_publish_reaches_every_subscriber(hot: HotState) -> None:
    channel = uuid.uuid4().hex
    received: list[list[dict[str, Any]]] = [[], []]

    async def listen(i: int) -> None:
        async for message in hot.subscribe(channel):
            received[i].append(message)
            if message == {"cancel": "conv1"}:
                return  # (a count would race: an early subscriber can see two probes)

    tasks = [asyncio.create_task(listen(i)) for i in range(2)]
    # subscriptions become active once the generators start; publish until they see it
    for _ in range(100):
        await hot.publish(channel, {"probe": True})
        await asyncio.sleep(0.02)
        if all(received):
            break
    await hot.publish(channel, {"cancel": "conv1"})
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert all(r[-1] == {"cancel": "conv1"} and r[0] == {"probe": True} for r in received)
