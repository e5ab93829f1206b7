"""Conversation jobs and how job progress becomes conversation events.

``conversation.export`` writes a whole conversation (every stored message,
oldest first) as JSON to media storage. :func:`job_event_hook` is the runner's
``on_event`` hook: for jobs whose arguments carry a ``conversation_id`` it
appends ``media.progress`` / ``media.done`` / ``error`` events to that
conversation's log, so a client on any replica sees them live or on resume.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import structlog

from media.jobs.base import JobContext, JobFailed, JobRunner, OnEvent
from media.storage import MediaStorage
from memory.eventlog import EventLog
from memory.records import MessageRecord
from memory.store import Store

log = structlog.get_logger(__name__)

EXPORT_KIND = "conversation.export"
EXPORT_MIME = "application/json"
EXPORT_FORMAT = "salon.conversation.export"
EXPORT_PAGE = 200
EXPORTS_FOLDER = "exports"


def export_folder(tenant_id: str, conversation_id: str) -> str:
    """Where a conversation's exports go: one folder each, so forgetting a person
    removes their exports by folder, without reading any file."""
    return f"{EXPORTS_FOLDER}/{tenant_id}/{conversation_id}"


def export_key(tenant_id: str, conversation_id: str, job_id: str) -> str:
    return f"{export_folder(tenant_id, conversation_id)}/{job_id}.json"


_CODED = re.compile(r"^\[([a-z][a-z0-9_]{0,63})\] (.*)$", re.S)


def failure_code(error: str) -> tuple[str, str]:
    """``("job_failed", error)``, or the code of an error written ``[code] message``."""
    match = _CODED.match(error)
    return (match.group(1), match.group(2)) if match else ("job_failed", error)


def result_url(job_id: str) -> str:
    """Where a finished job's file is served (see server/jobs_api.py)."""
    return f"/v1/jobs/{job_id}/result"


def register_conversation_jobs(
    runner: JobRunner,
    store: Store,
    events: EventLog,
    storage: MediaStorage,
    *,
    export_timeout: float | None = None,
) -> None:
    """Register the conversation jobs on ``runner`` (servers and workers alike)."""

    async def export(ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
        tenant_id = args.get("tenant_id")
        conversation_id = args.get("conversation_id")
        if not isinstance(tenant_id, str) or not isinstance(conversation_id, str):
            raise JobFailed("conversation.export needs string 'tenant_id' and 'conversation_id'")
        conversation = await store.get_conversation(tenant_id, conversation_id)
        if conversation is None:
            raise JobFailed(f"no conversation {conversation_id!r}")
        await ctx.progress(0.0, stage="reading")

        # Newest page first (the store pages backwards with before=); the total is not
        # known in advance, so reading progress approaches 0.8 page by page.
        pages: list[list[MessageRecord]] = []
        before: str | None = None
        count = 0
        while True:
            page = await store.list_messages(
                tenant_id, conversation_id, limit=EXPORT_PAGE, before=before
            )
            if page:
                pages.append(page)
                count += len(page)
                before = page[0].id
            if len(page) < EXPORT_PAGE:
                break
            await ctx.progress(0.8 * len(pages) / (len(pages) + 1), messages=count)
        messages = [m for page in reversed(pages) for m in page]
        await ctx.progress(0.8, stage="writing", messages=count)

        last_seq = max(conversation.last_seq, await events.latest_seq(conversation_id))
        user = await store.get_user(tenant_id, conversation.user_id)
        document = {
            "format": EXPORT_FORMAT,
            "version": 1,
            "exported_at": datetime.now(UTC).isoformat(),
            "conversation_id": conversation.id,
            "persona_id": conversation.persona_id,
            "user_id": conversation.user_id,
            "user": {"id": user.external_id, "name": user.name} if user else None,
            "channel": conversation.channel,
            "created_at": conversation.created_at.isoformat(),
            "last_seq": last_seq,
            "messages": [m.to_public() for m in messages],
        }
        data = json.dumps(document, ensure_ascii=False, indent=1).encode()
        key = await storage.put(
            export_key(tenant_id, conversation_id, ctx.job_id), data, EXPORT_MIME
        )
        if await store.get_conversation(tenant_id, conversation_id) is None:
            # The person was forgotten while we wrote: their file must not outlive them.
            await storage.delete(key)
            raise JobFailed("the conversation was deleted during the export")
        await ctx.progress(0.95, stage="stored", messages=count)
        return {"key": key, "mime": EXPORT_MIME, "messages": len(messages), "bytes": len(data)}

    runner.register(EXPORT_KIND, export, timeout=export_timeout)


def job_event_hook(events: EventLog, store: Store | None = None) -> OnEvent:
    """An ``on_event`` hook that reports jobs in their conversation's event log.

    Events (all logged, so they replay on resume): ``media.progress``
    ``{job_id, kind, progress}``, ``media.done`` ``{job_id, kind, url, mime}``, and
    ``error`` ``{code: "job_failed", message, job_id, kind}``. With ``store`` and a
    ``tenant_id`` in the job's arguments, the conversation's seq floor is applied
    before the first event of a job (the log may have expired since) and the highest
    seq is recorded, as replies do, so seq never goes back.
    """
    floors_applied: OrderedDict[str, None] = OrderedDict()

    async def ensure_floor(job_id: str, tenant_id: Any, conversation_id: str) -> None:
        if store is None or not isinstance(tenant_id, str) or job_id in floors_applied:
            return
        conversation = await store.get_conversation(tenant_id, conversation_id)
        if conversation is not None:
            await events.ensure_floor(conversation_id, conversation.last_seq)
        floors_applied[job_id] = None
        while len(floors_applied) > 10_000:
            floors_applied.popitem(last=False)

    async def hook(name: str, payload: dict[str, Any]) -> None:
        args = payload.get("args") or {}
        conversation_id = args.get("conversation_id") if isinstance(args, dict) else None
        if not isinstance(conversation_id, str) or not conversation_id:
            return
        job_id = str(payload.get("job_id"))
        # Media jobs name what they make (image, video, avatar); others their job kind.
        kind = args.get("media_kind") or payload.get("kind")
        tenant_id = args.get("tenant_id")
        if name == "progress":
            event: dict[str, Any] = {
                "type": "media.progress",
                "job_id": job_id,
                "kind": kind,
                "progress": round(float(payload.get("progress") or 0.0), 4),
            }
        elif name == "done":
            result = payload.get("result") or {}
            event = {
                "type": "media.done",
                "job_id": job_id,
                "kind": kind,
                # A job that made a media item gives its own (signed) URL.
                "url": result.get("url") or result_url(job_id),
                "mime": result.get("mime") or "application/octet-stream",
            }
        elif name == "failed":
            code, message = failure_code(str(payload.get("error") or "the job failed"))
            if code == "cancelled":
                return  # the cancel itself was announced (media.cancelled)
            event = {
                "type": "error",
                "code": code,
                "message": message,
                "job_id": job_id,
                "kind": kind,
            }
        else:
            return
        await ensure_floor(job_id, tenant_id, conversation_id)
        appended = await events.append(conversation_id, event)
        if name != "progress":
            floors_applied.pop(job_id, None)
        if store is not None and isinstance(tenant_id, str):
            await store.record_last_seq(tenant_id, conversation_id, int(appended["seq"]))

    return hook
