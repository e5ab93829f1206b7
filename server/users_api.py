"""A person's data: export it, or forget it entirely (docs/http-api.md)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agents.jobs import EXPORTS_FOLDER, export_folder
from media.storage import MediaStorage
from server.http_util import HTTPError, require_principal, state_of
from server.state import AppState

log = structlog.get_logger(__name__)

# Messages and memories are read and sent this many at a time.
EXPORT_PAGE = 500
# How far into a (legacy) export file the conversation id appears (the fourth key).
_EXPORT_HEAD_BYTES = 4096
_CONVERSATION_ID = re.compile(rb'"conversation_id"\s*:\s*"([^"\\]+)"')


async def _user(request: Request, *, api_key_only: bool) -> Any:
    principal = await require_principal(request, api_key_only=api_key_only)
    external_id = request.path_params["user_id"]
    if principal.is_session and principal.user_id != external_id:
        raise HTTPError(404, "user_not_found", f"no user {external_id!r}")
    user = await state_of(request).store.find_user(principal.tenant_id, external_id)
    if user is None:
        raise HTTPError(404, "user_not_found", f"no user {external_id!r}")
    return principal, user


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


async def _export_document(state: AppState, tenant_id: str, user: Any) -> AsyncIterator[bytes]:
    """The export document, written piece by piece.

    Same JSON as one ``json.dumps`` of ``{"user", "conversations", "memories"}``
    would give, but built from pages of :data:`EXPORT_PAGE` messages or
    memories, so a person with a long history costs the server one page of
    memory at a time, not the whole history.
    """
    yield b'{"user":' + _json({"id": user.external_id, "name": user.name})
    yield b',"conversations":['
    conversations = await state.store.list_conversations(tenant_id, user_id=user.id)
    for n, conv in enumerate(conversations):
        head = {
            "id": conv.id,
            "persona_id": conv.persona_id,
            "channel": conv.channel,
            "created_at": conv.created_at.isoformat(),
        }
        yield (b"," if n else b"") + _json(head)[:-1] + b',"messages":['
        first = True
        async for page in state.store.message_pages(tenant_id, conv.id, page=EXPORT_PAGE):
            body = b",".join(_json(m.to_public()) for m in page)
            yield (b"" if first else b",") + body
            first = False
        yield b"]}"
    yield b'],"memories":['
    if state.memory is not None:
        first = True
        async for records in state.memory.memories.pages_for_user(
            tenant_id, user.id, page=EXPORT_PAGE
        ):
            body = b",".join(_json(m.to_public()) for m in records)
            yield (b"" if first else b",") + body
            first = False
    yield b"]}"


async def export_user(request: Request) -> Response:
    """Everything stored about a person, as JSON (their own session token may ask too).

    Streamed (chunked): conversations with all their messages oldest first,
    then every memory item newest first, read a page at a time.
    """
    principal, user = await _user(request, api_key_only=False)
    state = state_of(request)
    return StreamingResponse(
        _export_document(state, principal.tenant_id, user),
        media_type="application/json",
    )


async def _delete_exports(storage: MediaStorage, tenant_id: str, conversation_ids: set[str]) -> int:
    """Remove the export files of these conversations; returns how many.

    Exports live in ``exports/<tenant>/<conversation>/`` (agents/jobs.py). Files
    of older versions sit directly in ``exports/``, named by job id: for those
    the conversation is read from the start of the file.
    """
    removed = 0
    for conversation_id in conversation_ids:
        for key in await storage.list_keys(export_folder(tenant_id, conversation_id)):
            removed += await storage.delete(key)
    for key in await storage.list_keys(EXPORTS_FOLDER):
        if key.count("/") != 1:
            continue  # in a conversation's folder: handled above
        head = await storage.head(key, _EXPORT_HEAD_BYTES)
        found = _CONVERSATION_ID.search(head or b"")
        if found and found.group(1).decode() in conversation_ids:
            removed += await storage.delete(key)
    return removed


async def forget_user(request: Request) -> Response:
    """Delete a person entirely: messages, conversations, memories, media, live event
    logs, and the files of their conversation exports (API key only)."""
    principal, user = await _user(request, api_key_only=True)
    state = state_of(request)
    conversations = await state.store.list_conversations(principal.tenant_id, user_id=user.id)
    forgotten = 0
    if state.memory is not None:  # memories, with their embeddings
        forgotten = await state.memory.memories.delete_for_user(principal.tenant_id, user.id)
    if state.extensions.analysis is not None:  # per-user analytics buckets
        await state.extensions.analysis.analyses.forget_user(principal.tenant_id, user.id)
    media = 0
    if state.extensions.media is not None:  # their images, videos, avatars and unshared files
        media = await state.extensions.media.forget_user(principal.tenant_id, user.id)
    counts = await state.store.delete_user(principal.tenant_id, user.id)
    counts["memories"] = forgotten
    counts["media"] = media
    for conv in conversations:  # the hot log holds message text too
        await state.events.forget(conv.id)
    counts["export_files"] = await _delete_exports(
        state.storage, principal.tenant_id, {c.id for c in conversations}
    )
    log.info("user_forgotten", tenant_id=principal.tenant_id, **counts)
    return JSONResponse({"deleted": counts})


routes = [
    Route("/v1/users/{user_id}/export", export_user, methods=["GET"]),
    Route("/v1/users/{user_id}/data", forget_user, methods=["DELETE"]),
]
