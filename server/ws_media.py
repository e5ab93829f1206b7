"""The media half of a WebSocket connection: ``media.create`` and ``media.cancel``.

Both go through the same :class:`agents.media.MediaService` as ``POST
/v1/media``; progress and results come back through the conversation's event
log (``media.progress``, ``media.done``, ``media.cancelled``, ``error``), so
they reach every socket of the conversation and replay on resume
(docs/media.md). A resent ``media.create`` with the same ``id`` is processed
once: the resend is answered with the job's current state, outside the log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.media import MediaError, MediaService
from server.http_util import HTTPError
from server.media_api import parse_options
from server.protocol import MediaCancel, MediaCreate

if TYPE_CHECKING:
    from server.ws import Connection


def _service(conn: Connection) -> MediaService | None:
    service: MediaService | None = conn.state.extensions.media
    return service


async def media_create(conn: Connection, event: MediaCreate) -> None:
    session = conn.session
    if session is None:
        await conn.error("no_session", "send session.start first", event.id)
        return
    service = _service(conn)
    if service is None:
        await conn.error(
            "not_supported", "media generation is not enabled on this server", event.id
        )
        return
    conv = session.conversation
    limit = service.config.media_requests_per_minute
    if not await conn.state.hot.hit(f"media-rate:{conv.tenant_id}", limit, 60):
        await conn.error(
            "rate_limited", "too many media requests; it was not accepted, try later", event.id
        )
        return
    try:
        options = parse_options(event.options or {})
        record, created = await service.request(
            conv.tenant_id,
            kind=event.kind,
            prompt=event.prompt,
            persona_id=conv.persona_id,
            user_id=conv.user_id,
            conversation_id=conv.id,
            options=options,
            client_id=event.id,
            requested_by="session",
        )
    except HTTPError as exc:
        await conn.error(exc.code, exc.message, event.id)
        return
    except MediaError as exc:
        await conn.error(exc.code, exc.message, event.id)
        return
    if not created:
        reply: dict[str, Any] = {
            "type": "media.progress",
            "job_id": record.id,
            "kind": record.kind,
            "progress": record.progress,
            "state": record.state,
            "duplicate": True,
        }
        if event.id is not None:
            reply["id"] = event.id
        await conn.send(reply)


async def media_cancel(conn: Connection, event: MediaCancel) -> None:
    session = conn.session
    if session is None:
        await conn.error("no_session", "send session.start first", event.id)
        return
    service = _service(conn)
    if service is None:
        await conn.error(
            "not_supported", "media generation is not enabled on this server", event.id
        )
        return
    conv = session.conversation
    record = await service.media.get(conv.tenant_id, event.job_id)
    if record is None or record.conversation_id != conv.id:
        await conn.error("media_not_found", f"no media job {event.job_id!r} here", event.id)
        return
    if record.finished:
        await conn.error("media_finished", f"the media job is already {record.state}", event.id)
        return
    await service.cancel(conv.tenant_id, record.id)  # media.cancelled goes to the log
