"""Feeds on a real database (SQLite and Postgres): fetch, dedupe, 304, failures, locks, tenants.

The service runs against a loopback feed server (tests/fakes/feed_server.py)
and the real :class:`memory.feeds_store.FeedStore` on each backend of
tests/test_store_contract.py's ``STORE_BACKENDS``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from agents.sessions import Session
from integrations.rss.service import FeedService, lock_name
from integrations.rss.settings import FeedSettings
from memory.feeds_store import Feed, FeedConflict, FeedItem, FeedStore, NewItem
from memory.hotstate import InProcessHotState
from memory.store import Store
from tests.fakes.feed_server import FIXTURES, FeedServer, rss
from tests.fakes.openai_server import free_port
from tests.test_store_contract import STORE_BACKENDS


@pytest.fixture(scope="module")
def feeds() -> Iterator[FeedServer]:
    server = FeedServer().start()
    yield server
    server.stop()


@pytest.fixture(params=list(STORE_BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_BACKENDS[request.param](request, tmp_path) as s:
        yield s


@pytest.fixture
async def service(store: Store) -> AsyncIterator[FeedService]:
    settings = FeedSettings(
        poll=False, allow_private=True, interval_seconds=600, timeout_seconds=3.0, cache_seconds=0
    )
    svc = FeedService(FeedStore(store), InProcessHotState(), settings)
    yield svc
    await svc.close()


async def _persona(store: Store, label: str) -> tuple[str, str]:
    tenant = await store.create_tenant(label)
    persona = await store.create_persona(tenant.id, slug=label, name=label.title(), data={})
    return tenant.id, persona.id


def _now_items(prefix: str, n: int, **extra: Any) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "title": f"{prefix} story {i}",
            "guid": f"{prefix}-{i}",
            "link": f"http://example.test/{prefix}/{i}",
            "description": f"About {prefix} number {i}.",
            "date": now - timedelta(minutes=10 + i),
            **extra,
        }
        for i in range(n)
    ]


async def test_fetch_dedupe_and_not_modified(
    store: Store, service: FeedService, feeds: FeedServer
) -> None:
    tenant, persona = await _persona(store, "reader")
    path = f"dedupe-{persona}.xml"
    url = feeds.put(path, rss(_now_items("tide", 3)))
    feed = await service.store.create_feed(
        tenant, persona_id=persona, url=url, interval_seconds=600
    )
    assert feed.to_public()["status"] == "pending"
    with pytest.raises(FeedConflict):
        await service.store.create_feed(tenant, persona_id=persona, url=url, interval_seconds=600)

    first = await service.refresh(feed)
    assert (first.status, first.new_items) == ("ok", 3)
    assert first.feed is not None and first.feed.title == "Fixture News"
    assert first.feed.etag and first.feed.last_ok_at and first.feed.failures == 0
    public = first.feed.to_public()
    assert public["status"] == "ok" and public["last_error"] is None
    next_at = datetime.fromisoformat(public["next_fetch_at"])
    assert timedelta(seconds=590) < next_at - first.feed.last_fetch_at <= timedelta(seconds=600)  # type: ignore[operator]

    items = await service.store.list_items(tenant, feed.id)
    assert len(items) == 3 and all(i.keyphrases for i in items)

    second = await service.refresh(feed)
    assert (second.status, second.new_items) == ("not_modified", 0)
    assert feeds.hits(path)[-1]["headers"]["if-none-match"] == first.feed.etag

    # A new version repeats two old items (one edited, same guid) and adds one.
    old = _now_items("tide", 2)
    old[0]["title"] = "tide story 0, updated"
    feeds.put(path, rss([*old, *_now_items("storm", 1)]))
    third = await service.refresh(feed)
    assert (third.status, third.new_items) == ("ok", 1)
    assert await service.store.count_items(tenant, feed.id) == 4


async def test_down_and_garbage_feeds_are_reported_with_backoff(
    store: Store, service: FeedService, feeds: FeedServer
) -> None:
    tenant, persona = await _persona(store, "patient")
    url = feeds.url(f"status/500?{persona}")
    feed = await service.store.create_feed(
        tenant, persona_id=persona, url=url, interval_seconds=600
    )

    one = await service.refresh(feed)
    assert one.status == "error" and one.error == "HTTP 500 Internal Server Error"
    assert one.feed is not None
    f1 = one.feed
    assert f1.failures == 1 and f1.last_status == 500 and f1.last_ok_at is None
    assert f1.to_public()["status"] == "error"
    delay = (f1.next_fetch_at - f1.last_fetch_at).total_seconds()  # type: ignore[operator]
    assert 1200 <= delay <= 1200 * 1.1 + 1  # interval * 2**1, plus jitter

    two = await service.refresh(f1)
    assert two.feed is not None and two.feed.failures == 2
    delay = (two.feed.next_fetch_at - two.feed.last_fetch_at).total_seconds()  # type: ignore[operator]
    assert 2400 <= delay <= 2400 * 1.1 + 1

    assert service.backoff_seconds(600, 30) == service.settings.max_backoff_seconds

    # Connection refused, then garbage, then healthy again: failures reset.
    refused = await service.store.create_feed(
        tenant,
        persona_id=persona,
        url=f"http://127.0.0.1:{free_port()}/feed.xml",
        interval_seconds=600,
    )
    out = await service.refresh(refused)
    assert out.status == "error" and "connection failed" in (out.error or "")

    garbage_path = f"garbage-{persona}.xml"
    garbage = await service.store.create_feed(
        tenant,
        persona_id=persona,
        url=feeds.put(garbage_path, (FIXTURES / "malformed.xml").read_bytes(), "text/html"),
        interval_seconds=600,
    )
    out = await service.refresh(garbage)
    assert out.status == "error" and "not an RSS or Atom feed" in (out.error or "")
    feeds.put(garbage_path, rss(_now_items("calm", 1)))
    healed = await service.refresh(garbage)
    assert healed.status == "ok" and healed.feed is not None
    assert healed.feed.failures == 0 and healed.feed.last_error is None
    assert healed.feed.last_ok_at is not None


async def test_one_replica_fetches_a_feed_at_a_time(
    store: Store, service: FeedService, feeds: FeedServer
) -> None:
    tenant, persona = await _persona(store, "locked")
    path = f"locked-{persona}.xml"
    url = feeds.put(path, rss(_now_items("lock", 1)))
    feed = await service.store.create_feed(
        tenant, persona_id=persona, url=url, interval_seconds=600
    )
    # Another replica holds the lock: nothing is fetched here.
    assert await service.hot.acquire_lock(lock_name(feed.id), "other-replica", 30)
    busy = await service.refresh(feed)
    assert busy.status == "busy" and feeds.hits(path) == []
    await service.hot.release_lock(lock_name(feed.id), "other-replica")
    assert (await service.refresh(feed)).status == "ok"
    assert await service.hot.lock_owner(lock_name(feed.id)) is None  # released


async def test_poll_fetches_only_due_feeds_across_tenants(
    store: Store, service: FeedService, feeds: FeedServer
) -> None:
    a_tenant, a_persona = await _persona(store, "poll-a")
    b_tenant, b_persona = await _persona(store, "poll-b")
    a = await service.store.create_feed(
        a_tenant,
        persona_id=a_persona,
        url=feeds.put(f"poll-{a_persona}.xml", rss(_now_items("alpha", 2))),
        interval_seconds=600,
    )
    b = await service.store.create_feed(
        b_tenant,
        persona_id=b_persona,
        url=feeds.put(f"poll-{b_persona}.xml", rss(_now_items("beta", 1))),
        interval_seconds=600,
    )
    assert await service.poll_once() == 2
    assert await service.store.count_items(a_tenant, a.id) == 2
    assert await service.store.count_items(b_tenant, b.id) == 1
    assert await service.poll_once() == 0  # nothing due until the interval has passed


async def test_feeds_are_tenant_scoped(
    store: Store, service: FeedService, feeds: FeedServer
) -> None:
    fs = service.store
    a_tenant, a_persona = await _persona(store, "mine")
    b_tenant, _ = await _persona(store, "theirs")
    feed = await fs.create_feed(
        a_tenant,
        persona_id=a_persona,
        url=feeds.put(f"scoped-{a_persona}.xml", rss(_now_items("secret", 2))),
        interval_seconds=600,
    )
    await service.refresh(feed)

    assert await fs.get_feed(b_tenant, feed.id) is None
    assert await fs.list_feeds(b_tenant) == []
    assert await fs.list_items(b_tenant, feed.id) == []
    assert await fs.items_since(b_tenant, a_persona, datetime(2000, 1, 1, tzinfo=UTC)) == []
    assert await fs.delete_feed(b_tenant, feed.id) is False
    assert [f.id for f in await fs.list_feeds(a_tenant)] == [feed.id]

    if store.engine.dialect.name == "postgresql":
        # Row-level security: a transaction that names no tenant sees no feed or item.
        async with fs._tx() as s:
            assert (await s.execute(select(func.count()).select_from(Feed))).scalar_one() == 0
            assert (await s.execute(select(func.count()).select_from(FeedItem))).scalar_one() == 0
        async with fs._tx(b_tenant) as s:
            assert (await s.execute(select(func.count()).select_from(Feed))).scalar_one() == 0

    assert await fs.delete_feed(a_tenant, feed.id) is True
    assert await fs.list_items(a_tenant, feed.id) == []


async def test_topics_and_the_context_hook(store: Store, service: FeedService) -> None:
    tenant, persona = await _persona(store, "newsy")
    fs = service.store
    feed = await fs.create_feed(
        tenant, persona_id=persona, url="http://example.test/f.xml", interval_seconds=600
    )
    now = datetime.now(UTC)

    def item(key: str, title: str, phrases: list[str], hours_ago: float) -> NewItem:
        return NewItem(key, title, None, "", now - timedelta(hours=hours_ago), phrases, 0.2)

    stored = [
        item(f"q{i}", f"Quantum battery news {i}", ["quantum battery"], 1 + i) for i in range(4)
    ]
    # "weather": as common in each past day as today, so flat.
    stored += [
        item(f"w{d}-{i}", f"Weather {d} {i}", ["weather"], 24 * d + 2 + i)
        for d in range(8)
        for i in range(2)
    ]
    await fs.add_items(feed, stored, now=now)

    found = await service.topics(tenant, persona)
    assert [t.phrase for t in found] == ["quantum battery"]
    assert found[0].count == 4 and found[0].sentiment == pytest.approx(0.2)

    hook_store = await store.get_persona(tenant, persona)
    user = await store.get_or_create_user(tenant, "u")
    conv = await store.create_conversation(tenant, persona_id=persona, user_id=user.id)
    assert hook_store is not None
    blocks = await service.context(Session(hook_store, user, conv), "hi")
    assert len(blocks) == 1
    assert blocks[0].startswith("Topics in the news you follow right now")
    assert "quantum battery (4 stories" in blocks[0]
    assert '"Quantum battery news 0"' in blocks[0]

    # Another tenant's persona gets nothing from these items.
    other_tenant, other_persona = await _persona(store, "quiet")
    assert await service.topics(other_tenant, other_persona) == []


@pytest.fixture(params=["inprocess", "redis"])
async def shared_hot(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The hot state two replicas share: in-process (one process) or Redis (production)."""
    if request.param == "redis":
        from memory.hotstate.redis import RedisHotState
        from memory.redis_client import create_redis

        url = request.getfixturevalue("redis_server").url
        state: Any = RedisHotState(create_redis(url), prefix=f"t{uuid.uuid4().hex[:8]}:")
    else:
        state = InProcessHotState()
    try:
        yield state
    finally:
        await state.close()


async def test_two_replicas_polling_fetch_a_feed_once(
    store: Store, shared_hot: Any, feeds: FeedServer
) -> None:
    settings = FeedSettings(poll=False, allow_private=True, interval_seconds=600)
    replicas = [
        FeedService(FeedStore(store), shared_hot, settings, replica_id=f"r{i}") for i in range(3)
    ]
    try:
        tenant, persona = await _persona(store, "shared")
        paths = [f"replicas-{persona}-{i}.xml" for i in range(4)]
        for i, path in enumerate(paths):
            await replicas[0].store.create_feed(
                tenant,
                persona_id=persona,
                url=feeds.put(path, rss(_now_items(f"r{i}", 2))),
                interval_seconds=600,
            )
        await asyncio.gather(*(r.poll_once() for r in replicas))
        await asyncio.gather(*(r.poll_once() for r in replicas))
        assert [len(feeds.hits(p)) for p in paths] == [1, 1, 1, 1]
        for feed in await replicas[0].store.list_feeds(tenant):
            assert await replicas[0].store.count_items(tenant, feed.id) == 2
    finally:
        for r in replicas:
            await r.close()
