"""A person's data: export it, or forget it entirely."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.http_util import HTTPError, require_principal, state_of


async def _user(request: Request, *, api_key_only: bool) -> Any:
    principal = await require_principal(request, api_key_only=api_key_only)
    external_id = request.path_params["user_id"]
    if principal.is_session and principal.user_id != external_id:
        raise HTTPError(404, "user_not_found", f"no user {external_id!r}")
    user = await state_of(request).store.find_user(principal.tenant_id, external_id)
    if user is None:
        raise HTTPError(404, "user_not_found", f"no user {external_id!r}")
    return principal, user


async def export_user(request: Request) -> Response:
    """Everything stored about a person, as JSON (their own session token may ask too)."""
    principal, user = await _user(request, api_key_only=False)
    state = state_of(request)
    conversations: list[dict[str, Any]] = []
    for conv in await state.store.list_conversations(principal.tenant_id, user_id=user.id):
        messages: list[dict[str, Any]] = []
        before: str | None = None
        while True:  # oldest first, paged backwards
            page = await state.store.list_messages(
                principal.tenant_id, conv.id, limit=500, before=before
            )
            messages[:0] = [m.to_public() for m in page]
            if len(page) < 500:
                break
            before = page[0].id
        conversations.append(
            {
                "id": conv.id,
                "persona_id": conv.persona_id,
                "channel": conv.channel,
                "created_at": conv.created_at.isoformat(),
                "messages": messages,
            }
        )
    memories: list[dict[str, Any]] = []
    if state.memory is not None:
        records = await state.memory.memories.list(
            principal.tenant_id, user_id=user.id, include_superseded=True, limit=100_000
        )
        memories = [m.to_public() for m in records]
    return JSONResponse(
        {
            "user": {"id": user.external_id, "name": user.name},
            "conversations": conversations,
            "memories": memories,
        }
    )


async def forget_user(request: Request) -> Response:
    """Delete a person entirely: messages, conversations, live event logs (API key only)."""
    principal, user = await _user(request, api_key_only=True)
    state = state_of(request)
    conversations = await state.store.list_conversations(principal.tenant_id, user_id=user.id)
    forgotten = 0
    if state.memory is not None:  # memories, with their embeddings
        forgotten = await state.memory.memories.delete_for_user(principal.tenant_id, user.id)
    counts = await state.store.delete_user(principal.tenant_id, user.id)
    counts["memories"] = forgotten
    for conv in conversations:  # the hot log holds message text too
        await state.events.forget(conv.id)
    return JSONResponse({"deleted": counts})


routes = [
    Route("/v1/users/{user_id}/export", export_user, methods=["GET"]),
    Route("/v1/users/{user_id}/data", forget_user, methods=["DELETE"]),
]
