"""Media items and quotas (memory/media_store.py) on every database backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from memory.media_store import MediaStore
from memory.store import Store
from tests.test_store_contract import STORE_BACKENDS


@pytest.fixture(params=list(STORE_BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_BACKENDS[request.param](request, tmp_path) as s:
        yield s


@dataclass
class Who:
    tenant: str
    persona: str
    user: str
    conversation: str


async def _who(store: Store, label: str) -> Who:
    tenant = (await store.create_tenant(f"t {label}")).id
    persona = await store.create_persona(tenant, slug=f"p-{label}", name=label, data={})
    user = await store.get_or_create_user(tenant, f"u-{label}", label)
    conv = await store.create_conversation(tenant, persona_id=persona.id, user_id=user.id)
    return Who(tenant, persona.id, user.id, conv.id)


async def test_an_item_goes_from_queued_to_done(store: Store) -> None:
    media = MediaStore(store)
    w = await _who(store, "a")
    item = await media.create(
        w.tenant,
        kind="image",
        prompt="a red kite",
        persona_id=w.persona,
        user_id=w.user,
        conversation_id=w.conversation,
        options={"seed": 7},
        client_id="c1",
    )
    assert item.id.startswith("med_") and item.state == "queued" and not item.finished
    assert await media.by_client_id(w.tenant, w.conversation, "c1") == item

    running = await media.start(w.tenant, item.id, "procedural")
    assert running is not None and running.state == "running" and running.generator == "procedural"
    await media.set_progress(w.tenant, item.id, 0.5)
    assert (await media.get(w.tenant, item.id)).progress == 0.5  # type: ignore[union-attr]
    done = await media.finish(
        w.tenant,
        item.id,
        sha256="ab" * 32,
        storage_key="cas/ab/x.png",
        mime="image/png",
        size=1234,
        width=64,
        height=64,
        meta={"steps": 4},
    )
    assert done is not None and done.state == "done" and done.finished and done.progress == 1.0
    assert (done.bytes, done.mime, done.width, done.meta) == (1234, "image/png", 64, {"steps": 4})
    assert done.finished_at is not None and done.options == {"seed": 7}
    # A finished item cannot be failed or restarted.
    assert await media.fail(w.tenant, item.id, "x", "y") is False
    assert await media.start(w.tenant, item.id, "again") is None


async def test_a_cancelled_item_is_never_started_or_finished(store: Store) -> None:
    media = MediaStore(store)
    w = await _who(store, "c")
    item = await media.create(w.tenant, kind="video", prompt="waves", persona_id=w.persona)

    assert await media.fail(w.tenant, item.id, "cancelled", "by the client", state="cancelled")
    got = await media.get(w.tenant, item.id)
    assert got is not None and got.state == "cancelled" and got.error_code == "cancelled"
    assert await media.start(w.tenant, item.id, "animated") is None
    assert (
        await media.finish(
            w.tenant, item.id, sha256="c" * 64, storage_key="k", mime="video/mp4", size=1
        )
        is None
    )
    with pytest.raises(ValueError):
        await media.fail(w.tenant, item.id, "x", "y", state="done")


async def test_items_are_tenant_scoped_and_listed_newest_first(store: Store) -> None:
    media = MediaStore(store)
    a = await _who(store, "ta")
    b = await _who(store, "tb")
    first = await media.create(a.tenant, kind="image", prompt="one", persona_id=a.persona)
    second = await media.create(
        a.tenant, kind="avatar", prompt="", persona_id=a.persona, user_id=a.user
    )
    other = await media.create(b.tenant, kind="image", prompt="theirs", persona_id=b.persona)

    assert [i.id for i in await media.list_items(a.tenant)] == [second.id, first.id]
    assert [i.id for i in await media.list_items(a.tenant, kind="image")] == [first.id]
    assert [i.id for i in await media.list_items(a.tenant, user_id=a.user)] == [second.id]
    assert [i.id for i in await media.list_items(a.tenant, states=["done"])] == []
    assert await media.get(a.tenant, other.id) is None  # another tenant's: not found
    assert await media.delete(a.tenant, other.id) is None
    assert await media.get(b.tenant, other.id) is not None


async def test_usage_quota_and_shared_files(store: Store) -> None:
    media = MediaStore(store)
    a = await _who(store, "qa")
    b = await _who(store, "qb")

    async def done(w: Who, sha: str, size: int, user: str | None = None) -> str:
        item = await media.create(
            w.tenant, kind="image", prompt="p", persona_id=w.persona, user_id=user
        )
        await media.start(w.tenant, item.id, "g")
        await media.finish(
            w.tenant, item.id, sha256=sha, storage_key=f"cas/{sha}", mime="image/png", size=size
        )
        return item.id

    shared = "f" * 64
    a1 = await done(a, shared, 100, user=a.user)
    await done(a, "e" * 64, 50)
    b1 = await done(b, shared, 100)
    await media.create(
        a.tenant, kind="image", prompt="queued", persona_id=a.persona
    )  # no bytes yet

    assert await media.usage_bytes(a.tenant) == 150
    assert await media.get_quota(a.tenant) is None
    await media.set_quota(a.tenant, 10_000)
    assert await media.get_quota(a.tenant) == 10_000
    await media.set_quota(a.tenant, 20_000)
    assert await media.get_quota(a.tenant) == 20_000
    await media.set_quota(a.tenant, None)
    assert await media.get_quota(a.tenant) is None

    # The shared file stays while tenant B still points at it.
    forgotten = await media.delete_for_user(a.tenant, a.user)
    assert [r.id for r in forgotten] == [a1]
    assert await media.unreferenced([shared, "e" * 64]) == []
    await media.delete(b.tenant, b1)
    assert await media.unreferenced([shared, "e" * 64, ""]) == [shared]
