"""Media requests through jobs to stored files and conversation events (agents/media*.py).

The real service, job runner (in-process), event log, store (SQLite) and
storage; the generators are small subclasses of the real base that count
their steps, so cancellation and progress can be observed exactly.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from agents.jobs import job_event_hook
from agents.media import Generators, MediaError, MediaService, PromptVerdict
from agents.media_intent import MediaIntent, detect, intent_hook
from agents.media_jobs import register_media_jobs
from agents.sessions import Session
from media.generation import (
    GeneratedMedia,
    MediaGenerationError,
    MediaGenerator,
    MediaRequest,
    Progress,
    no_progress,
)
from media.jobs.inprocess import InProcessJobRunner
from media.media_config import MediaConfig
from media.signed_urls import verify
from media.storage import LocalMediaStorage
from memory.db import create_engine, normalize_database_url
from memory.eventlog import InProcessEventLog
from memory.media_store import MediaStore
from memory.migrate import migrate
from memory.store import Store

SECRET = b"s" * 32


def _png(color: tuple[int, int, int], size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, "PNG")
    return out.getvalue()


class StepGenerator(MediaGenerator):
    """``steps`` steps of ``delay`` seconds each, reporting progress after each."""

    def __init__(
        self, kind: str, *, steps: int = 5, delay: float = 0.0, mime: str = "image/png"
    ) -> None:
        self.kind = kind  # type: ignore[assignment]
        self.name = f"step-{kind}"
        self.steps = steps
        self.delay = delay
        self.mime = mime
        self.requests: list[MediaRequest] = []
        self.done_steps = 0
        self.cancelled = False

    async def generate(
        self, request: MediaRequest, progress: Progress = no_progress
    ) -> GeneratedMedia:
        self.requests.append(request)
        try:
            for step in range(1, self.steps + 1):
                await asyncio.sleep(self.delay)
                self.done_steps = step
                await progress(step / self.steps, step=step, steps=self.steps)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        data = (
            _png((len(request.prompt) % 255, 10, 200)) if self.mime == "image/png" else b"\x00" * 64
        )
        return GeneratedMedia(data, self.mime, width=16, height=16, meta={"steps": self.steps})


class Unavailable(MediaGenerator):
    name = "missing"

    async def generate(
        self, request: MediaRequest, progress: Progress = no_progress
    ) -> GeneratedMedia:
        raise MediaGenerationError(
            "no weights: set SALON_IMAGE_DIFFUSERS_MODEL", code="generator_unavailable"
        )


def _always(generator: MediaGenerator) -> Any:
    """A generator factory that hands out this one instance."""
    return lambda config: generator


@dataclass
class World:
    service: MediaService
    store: Store
    events: InProcessEventLog
    runner: InProcessJobRunner
    storage: LocalMediaStorage
    gens: dict[str, StepGenerator]
    tenant: str = ""
    persona: str = ""
    user: str = ""
    conversation: str = ""
    nsfw_scores: list[float] = field(default_factory=list)

    async def request(self, kind: str = "image", prompt: str = "a red kite", **kw: Any) -> str:
        record, created = await self.service.request(
            self.tenant,
            kind=kind,
            prompt=prompt,
            persona_id=self.persona,
            user_id=self.user,
            conversation_id=self.conversation,
            **kw,
        )
        assert created
        return record.id

    async def events_until(
        self, kinds: set[str], job_id: str, timeout: float = 10
    ) -> list[dict[str, Any]]:
        """This job's events in the conversation, once one of ``kinds`` is among them."""
        async with asyncio.timeout(timeout):
            while True:
                logged = await self.events.replay(self.conversation, 0)
                got = [e for e in logged if e.get("job_id") == job_id]
                if any(e["type"] in kinds for e in got):
                    return got
                await asyncio.sleep(0.02)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    engine = create_engine(normalize_database_url(None, tmp_path))
    await migrate(engine)
    store = Store(engine)
    events = InProcessEventLog()
    runner = InProcessJobRunner(on_event=job_event_hook(events, store), concurrency=2)
    storage = LocalMediaStorage(tmp_path / "media")
    gens = {k: StepGenerator(k) for k in ("image", "video", "avatar")}
    gens["video"].mime = "video/mp4"
    gens["avatar"].mime = "model/gltf-binary"
    config = MediaConfig(media_quota_bytes=10_000, media_concurrency=2)
    w = World(None, store, events, runner, storage, gens)  # type: ignore[arg-type]

    async def nsfw(png: bytes) -> float:
        return w.nsfw_scores.pop(0) if w.nsfw_scores else 0.01

    service = MediaService(
        store,
        MediaStore(store),
        storage,
        runner,
        events,
        config,
        secret=SECRET,
        generators=Generators(config, {k: _always(g) for k, g in gens.items()}),
        nsfw_score=nsfw,
    )
    w.service = service
    register_media_jobs(runner, service)
    await runner.start()
    tenant = (await store.create_tenant("t")).id
    persona = await store.create_persona(
        tenant, slug="ada", name="Ada", data={"description": "a sea captain", "tags": ["sea"]}
    )
    user = await store.get_or_create_user(tenant, "u1", "Una")
    conv = await store.create_conversation(tenant, persona_id=persona.id, user_id=user.id)
    w.tenant, w.persona, w.user, w.conversation = tenant, persona.id, user.id, conv.id

    try:
        yield w
    finally:
        await runner.close()
        await store.close()


async def test_a_request_becomes_a_stored_file_with_progress_and_a_signed_url(world: World) -> None:
    media_id = await world.request(prompt="a red kite", client_id="c1", options={"seed": 3})
    events = await world.events_until({"media.done", "error"}, media_id)

    kinds = [e["type"] for e in events]
    assert (
        kinds[0] == "media.progress" and events[0]["id"] == "c1" and events[0]["state"] == "queued"
    )
    assert kinds[-1] == "media.done"
    progress = [e["progress"] for e in events if e["type"] == "media.progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) >= 3
    done = events[-1]
    assert done["kind"] == "image" and done["mime"] == "image/png"
    path, query = urlsplit(done["url"]).path, parse_qs(urlsplit(done["url"]).query)
    assert path == f"/v1/media/files/{world.tenant}/{media_id}"
    assert verify(path, query["exp"][0], query["sig"][0], SECRET)

    item = await world.service.media.get(world.tenant, media_id)
    assert item is not None and item.state == "done" and item.generator == "step-image"
    assert item.storage_key is not None and item.storage_key.startswith("cas/")
    data, mime = await world.storage.open(item.storage_key)  # type: ignore[misc]
    assert mime == "image/png" and len(data) == item.bytes
    assert item.meta["steps"] == 5 and "seconds_to_generate" in item.meta
    # The generator saw the persona and the options.
    request = world.gens["image"].requests[-1]
    assert request.persona.name == "Ada" and request.persona.attributes["tags"] == "sea"
    assert request.seed == 3 and request.prompt == "a red kite"


async def test_a_repeated_client_id_is_processed_once(world: World) -> None:
    first = await world.request(client_id="same")
    again, created = await world.service.request(
        world.tenant,
        kind="image",
        prompt="other",
        persona_id=world.persona,
        conversation_id=world.conversation,
        client_id="same",
    )
    assert not created and again.id == first


async def test_cancel_stops_the_generator_between_steps(world: World) -> None:
    slow = world.gens["video"]
    slow.steps, slow.delay = 100, 0.05
    media_id = await world.request(kind="video", prompt="waves")
    await world.events_until({"media.progress"}, media_id)
    while slow.done_steps < 3:
        await asyncio.sleep(0.02)

    record = await world.service.cancel(world.tenant, media_id)
    assert record is not None and record.state == "cancelled"
    events = await world.events_until({"media.cancelled"}, media_id)
    await asyncio.sleep(1.0)  # the job notices within half a second

    assert slow.cancelled and slow.done_steps < 40
    events = [
        e for e in await world.events.replay(world.conversation, 0) if e.get("job_id") == media_id
    ]
    assert not any(e["type"] in ("media.done", "error") for e in events)
    item = await world.service.media.get(world.tenant, media_id)
    assert item is not None and item.state == "cancelled" and item.storage_key is None


async def test_nsfw_images_are_withheld_or_flagged_per_policy(world: World) -> None:
    policy = {"value": "block"}

    async def image_policy(tenant_id: str) -> str:
        return policy["value"]

    world.service.image_policy = image_policy
    world.nsfw_scores[:] = [0.97]
    blocked = await world.request(prompt="something")
    events = await world.events_until({"media.done", "error"}, blocked)
    assert events[-1]["type"] == "error" and events[-1]["code"] == "media_refused"
    item = await world.service.media.get(world.tenant, blocked)
    assert item is not None and item.state == "failed" and item.storage_key is None
    assert await world.storage.list_keys("cas") == []

    policy["value"] = "flag"
    world.nsfw_scores[:] = [0.97]
    flagged = await world.request(prompt="something else")
    events = await world.events_until({"media.done", "error"}, flagged)
    assert events[-1]["type"] == "media.done"
    assert (await world.service.media.get(world.tenant, flagged)).meta["nsfw_flagged"] is True  # type: ignore[union-attr]

    policy["value"] = "allow"
    world.nsfw_scores[:] = [0.99]
    allowed = await world.request(prompt="third")
    await world.events_until({"media.done"}, allowed)
    assert world.nsfw_scores == [0.99]  # not even scored


async def test_quota_is_checked_before_queueing_and_before_storing(world: World) -> None:
    await world.service.media.set_quota(world.tenant, 30)  # smaller than one PNG
    media_id = await world.request()
    events = await world.events_until({"media.done", "error"}, media_id)
    assert events[-1]["type"] == "error" and events[-1]["code"] == "quota_exceeded"

    await world.service.media.set_quota(world.tenant, 0)
    with pytest.raises(MediaError) as refused:
        await world.request()
    assert refused.value.code == "quota_exceeded"


async def test_bad_requests_and_blocked_prompts_store_nothing(world: World) -> None:
    async def check(tenant: str, text: str, *ids: Any) -> PromptVerdict:
        if "forbidden" in text:
            return PromptVerdict(text, blocked=True, code="moderation_blocked", message="no")
        return PromptVerdict(text.replace("secret@mail.com", "[email]"))

    world.service.check_prompt = check
    for kind, prompt, code in (
        ("sound", "x", "invalid_request"),
        ("image", "", "invalid_request"),
        ("image", "x" * 1001, "invalid_request"),
        ("image", "a forbidden thing", "moderation_blocked"),
    ):
        with pytest.raises(MediaError) as err:
            await world.request(kind=kind, prompt=prompt)
        assert err.value.code == code
    assert await world.service.media.list_items(world.tenant) == []

    media_id = await world.request(prompt="mail secret@mail.com a kite")
    item = await world.service.media.get(world.tenant, media_id)
    assert item is not None and item.prompt == "mail [email] a kite"  # masked as the policy says


async def test_a_missing_generator_fails_clearly(world: World) -> None:
    world.service.generators = Generators(world.service.config, {"image": lambda c: Unavailable()})
    media_id = await world.request()
    events = await world.events_until({"media.done", "error"}, media_id)
    assert events[-1]["code"] == "generator_unavailable"
    assert "SALON_IMAGE_DIFFUSERS_MODEL" in events[-1]["message"]
    item = await world.service.media.get(world.tenant, media_id)
    assert (
        item is not None and item.state == "failed" and item.error_code == "generator_unavailable"
    )


async def test_a_video_animates_the_personas_latest_image_or_a_new_one(world: World) -> None:
    first = await world.request(kind="video", prompt="the ship")
    await world.events_until({"media.done"}, first)
    made_image = world.gens["image"].requests[-1]
    assert made_image.prompt == "the ship"  # no image yet: one was generated first
    video_request = world.gens["video"].requests[-1]
    assert video_request.image is not None and video_request.image.startswith(b"\x89PNG")

    image_id = await world.request(kind="image", prompt="portrait")
    await world.events_until({"media.done"}, image_id)
    images_before = len(world.gens["image"].requests)
    second = await world.request(kind="video", prompt="again")
    await world.events_until({"media.done"}, second)
    assert len(world.gens["image"].requests) == images_before  # reused the latest image
    stored = await world.service.media.get(world.tenant, image_id)
    assert stored is not None and stored.storage_key is not None
    opened = await world.storage.open(stored.storage_key)
    assert opened is not None and world.gens["video"].requests[-1].image == opened[0]


async def test_deleting_keeps_a_shared_file_until_its_last_item_goes(world: World) -> None:
    a = await world.request(prompt="same prompt")
    b = await world.request(prompt="same prompt")  # the fake makes identical bytes
    await world.events_until({"media.done"}, a)
    await world.events_until({"media.done"}, b)
    item = await world.service.media.get(world.tenant, a)
    assert item is not None and item.storage_key is not None

    assert await world.service.delete(world.tenant, a)
    assert await world.storage.exists(item.storage_key)
    assert await world.service.delete(world.tenant, b)
    assert not await world.storage.exists(item.storage_key)
    assert not await world.service.delete(world.tenant, b)


# -- "show me ..." -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Show me a picture of your ship, please!", MediaIntent("image", "your ship")),
        (
            "can you send me a photo of the harbour at night?",
            MediaIntent("image", "the harbour at night"),
        ),
        ("show me your garden", MediaIntent("image", "your garden")),
        ("Draw me a dragon over the sea.", MediaIntent("image", "a dragon over the sea")),
        ("send me a video of the waves", MediaIntent("video", "the waves")),
        ("Can I see your 3D avatar?", MediaIntent("avatar", "your 3D avatar")),
        ("Nice. Let me see the puppy now", MediaIntent("image", "the puppy")),
    ],
)
def test_requests_to_see_something_are_detected(text: str, expected: MediaIntent) -> None:
    assert detect(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "show me how to tie a knot",
        "what image do you have of yourself?",
        "I saw a picture of a cat yesterday",
        "can I see what you mean?",
        "hello there",
    ],
)
def test_questions_and_mentions_are_not_requests(text: str) -> None:
    assert detect(text) is None


async def test_the_intent_hook_queues_media_once_per_message(world: World) -> None:
    store = world.store
    persona = await store.get_persona(world.tenant, world.persona)
    user = await store.get_user(world.tenant, world.user)
    conv = await store.get_conversation(world.tenant, world.conversation)
    session = Session(persona, user, conv)  # type: ignore[arg-type]
    message, _ = await store.add_message(
        world.tenant, world.conversation, role="user", content="show me a picture of the lighthouse"
    )
    hook = intent_hook(world.service)
    await hook(session, message)
    await hook(session, message)  # the same message again: no second request

    items = await world.service.media.list_items(world.tenant)
    assert len(items) == 1 and items[0].prompt == "the lighthouse"
    assert items[0].requested_by == "persona" and items[0].client_id == f"intent:{message.id}"
    await world.events_until({"media.done"}, items[0].id)

    reply, _ = await store.add_message(
        world.tenant, world.conversation, role="assistant", content="show me a cat"
    )
    await hook(session, reply)  # the persona's own words never trigger it
    assert len(await world.service.media.list_items(world.tenant)) == 1
