"""The ``media.generate`` job: run a generator for one media item, check it, store it.

Runs wherever jobs run (in the server on the embedded default, in ``salon
worker`` processes with Redis). At most ``SALON_MEDIA_CONCURRENCY``
generations at once per process: generators are CPU- or GPU-bound, and two
diffusion runs on two cores only slow each other down.

Progress is the generator's own (steps, frames, build stages), passed to the
runner (-> ``media.progress`` events) at most every 0.2 s or 5 %, and saved
on the item at most once a second. A client's cancel marks the item
``cancelled``; the job sees it within half a second and cancels the
generator, which stops between steps. A failure ends the item ``failed`` with
its code, which the ``error`` event carries (``[code] message``, see
agents/jobs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from agents.media import JOB_KIND, MediaError, MediaService
from media.generation import (
    GeneratedMedia,
    MediaGenerationError,
    MediaRequest,
    PersonaLook,
    Progress,
)
from media.jobs.base import JobFailed
from memory.media_store import MediaRecord

log = structlog.get_logger(__name__)

CANCEL_POLL_SECONDS = 0.5
EVENT_INTERVAL = 0.2  # seconds between progress events, at most
EVENT_STEP = 0.05  # ... unless progress moved this much
SAVE_INTERVAL = 1.0  # seconds between progress writes to the item
DEFAULT_TIMEOUT = 1800.0  # a video on CPU can take long; the runner stops it after this


class Cancelled(Exception):
    """The client cancelled the item while it was being generated."""


def failed(code: str, message: str) -> JobFailed:
    """A job failure whose code reaches the client's ``error`` event."""
    return JobFailed(f"[{code}] {message}")


class _Reporter:
    """Throttles a generator's progress into runner events and item updates."""

    def __init__(self, ctx: Any, service: MediaService, record: MediaRecord) -> None:
        self.ctx = ctx
        self.service = service
        self.record = record
        self.sent = -1.0
        self.sent_at = 0.0
        self.saved_at = 0.0
        self.events = 0

    def scaled(self, low: float, high: float) -> Progress:
        """A progress callback for one stage, mapped into ``low..high`` of the whole."""

        async def report(fraction: float, **info: Any) -> None:
            await self(low + (high - low) * max(0.0, min(1.0, fraction)), **info)

        return report

    async def __call__(self, fraction: float, **info: Any) -> None:
        now = time.monotonic()
        final = fraction >= 1.0
        if not final and now - self.sent_at < EVENT_INTERVAL and fraction - self.sent < EVENT_STEP:
            return
        if fraction <= self.sent and not final:
            return  # progress never goes back
        self.sent, self.sent_at = fraction, now
        self.events += 1
        await self.ctx.progress(fraction, **info)
        if now - self.saved_at >= SAVE_INTERVAL:
            self.saved_at = now
            await self.service.media.set_progress(self.record.tenant_id, self.record.id, fraction)


async def persona_look(service: MediaService, record: MediaRecord) -> PersonaLook:
    """Name and plain-text attributes of the persona, for generators to style with."""
    if record.persona_id is None:
        return PersonaLook()
    persona = await service.store.get_persona(record.tenant_id, record.persona_id)
    if persona is None:
        return PersonaLook()
    data = persona.data if isinstance(persona.data, dict) else {}
    attributes: dict[str, str] = {}
    for key in ("description", "personality", "scenario", "appearance"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            attributes[key] = value.strip()[:500]
    tags = data.get("tags")
    if isinstance(tags, list):
        attributes["tags"] = ", ".join(str(t) for t in tags[:20])
    return PersonaLook(name=persona.name, attributes=attributes)


async def _input_image(
    service: MediaService, record: MediaRecord, look: PersonaLook, reporter: _Reporter
) -> bytes:
    """The image a video animates: the persona's latest image, or a new one (0..30 %)."""
    latest = await service.media.list_items(
        record.tenant_id, persona_id=record.persona_id, kind="image", states=("done",), limit=1
    )
    if latest and latest[0].storage_key:
        stored = await service.storage.open(latest[0].storage_key)
        if stored is not None:
            return stored[0]
    image = await service.generators.get("image").generate(
        MediaRequest(kind="image", prompt=record.prompt or look.name, persona=look),
        reporter.scaled(0.0, 0.3),
    )
    return image.data


async def _nsfw_verdict(service: MediaService, record: MediaRecord, png: bytes) -> str | None:
    """``None`` when the image passes, else the tenant's action: ``flag`` or ``block``."""
    if service.nsfw_score is None:
        return None
    action = await service.image_policy(record.tenant_id) if service.image_policy else "block"
    if action == "allow":
        return None
    score = await service.nsfw_score(png)
    if score < service.config.media_nsfw_threshold:
        return None
    log.info("media_nsfw", media_id=record.id, score=round(score, 3), action=action)
    return action


async def _watch_cancel(
    service: MediaService, record: MediaRecord, work: asyncio.Task[Any]
) -> None:
    while not work.done():
        await asyncio.sleep(CANCEL_POLL_SECONDS)
        current = await service.media.get(record.tenant_id, record.id)
        if current is None or current.state == "cancelled":
            work.cancel(Cancelled.__name__)
            return


async def _generate(
    service: MediaService, record: MediaRecord, reporter: _Reporter
) -> GeneratedMedia:
    look = await persona_look(service, record)
    generator = service.generators.get(record.kind)
    options = dict(record.options)
    request = MediaRequest(
        kind=record.kind,  # type: ignore[arg-type]
        prompt=record.prompt,
        persona=look,
        width=int(options.get("width") or service.config.image_width),
        height=int(options.get("height") or service.config.image_height),
        steps=options.get("steps"),
        seconds=float(options.get("seconds") or service.config.video_seconds),
        fps=int(options.get("fps") or service.config.video_fps),
        seed=options.get("seed"),
        negative_prompt=options.get("negative_prompt"),
        options={k: v for k, v in options.items() if k in ("animations", "fade_in")},
    )
    if record.kind == "video":
        image = await _input_image(service, record, look, reporter)
        request = MediaRequest(**{**request.__dict__, "image": image})
        return await generator.generate(request, reporter.scaled(0.3, 1.0))
    return await generator.generate(request, reporter)


async def run_media_job(service: MediaService, ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
    """Generate, check and store one media item; the job's result carries its URL."""
    tenant_id, media_id = args.get("tenant_id"), args.get("media_id")
    if not isinstance(tenant_id, str) or not isinstance(media_id, str):
        raise failed("invalid_request", "media.generate needs string 'tenant_id' and 'media_id'")
    record = await service.media.get(tenant_id, media_id)
    if record is None:
        raise failed("media_not_found", f"no media item {media_id!r}")
    try:
        generator = service.generators.get(record.kind)
    except MediaGenerationError as exc:
        await service.media.fail(tenant_id, media_id, exc.code, str(exc))
        raise failed(exc.code, str(exc)) from exc
    started = await service.media.start(tenant_id, media_id, generator.name)
    if started is None:  # cancelled while queued
        raise failed("cancelled", "cancelled by the client")
    reporter = _Reporter(ctx, service, started)
    await reporter(0.0, stage="started")
    began = time.perf_counter()
    work = asyncio.create_task(_generate(service, started, reporter))
    watcher = asyncio.create_task(_watch_cancel(service, started, work))
    try:
        result = await work
    except asyncio.CancelledError:
        if work.cancelled() and not _task_cancelling():
            raise failed("cancelled", "cancelled by the client") from None
        raise
    except MediaGenerationError as exc:
        await service.media.fail(tenant_id, media_id, exc.code, str(exc))
        raise failed(exc.code, str(exc)) from exc
    except Exception as exc:
        log.exception("media_generation_failed", media_id=media_id)
        await service.media.fail(tenant_id, media_id, "generation_failed", repr(exc))
        raise failed("generation_failed", f"the {record.kind} could not be made") from exc
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
    meta = {**result.meta, "seconds_to_generate": round(time.perf_counter() - began, 3)}
    if result.mime.startswith("image/"):
        action = await _nsfw_verdict(service, started, result.data)
        if action == "block":
            message = "the generated image was withheld by the tenant's image policy (nsfw)"
            await service.media.fail(tenant_id, media_id, "media_refused", message)
            raise failed("media_refused", message)
        if action == "flag":
            meta["nsfw_flagged"] = True
    try:
        ref = await service.store_file(tenant_id, result.data, result.mime)
    except MediaError as exc:
        await service.media.fail(tenant_id, media_id, exc.code, exc.message)
        raise failed(exc.code, exc.message) from exc
    done = await service.media.finish(
        tenant_id,
        media_id,
        sha256=ref.sha256,
        storage_key=ref.key,
        mime=ref.mime,
        size=ref.size,
        width=result.width,
        height=result.height,
        seconds=result.seconds,
        meta=meta,
    )
    if done is None:  # cancelled at the last moment: nothing refers to the file now
        await service.delete_files_if_unused({ref.sha256: ref.key})
        raise failed("cancelled", "cancelled by the client")
    await reporter(1.0, stage="stored")
    return {
        "media_id": media_id,
        "url": service.url(done),
        "mime": ref.mime,
        "bytes": ref.size,
        "progress_events": reporter.events,
    }


def _task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def register_media_jobs(
    runner: Any, service: MediaService, *, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """``media.generate`` on ``runner`` (servers and workers alike)."""

    async def job(ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        async with service.slots:
            return await run_media_job(service, ctx, args)

    runner.register(JOB_KIND, job, timeout=timeout)
