"""``/v1/memories``: see, add, edit, pin and forget what personas remember about people."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from memory.memories import MemoryRecord
from server.auth import Principal
from server.http_util import HTTPError, json_body, require_principal, state_of

KINDS = ("turn", "fact", "preference", "event", "summary")


def _memory_service(request: Request) -> Any:
    service = state_of(request).memory
    if service is None:
        raise HTTPError(
            404, "memory_disabled", "long-term memory is disabled (SALON_MEMORY_ENABLED)"
        )
    return service


async def _resolve(
    request: Request, principal: Principal, persona: Any, user: Any
) -> tuple[str | None, str | None]:
    """Persona (id or slug) and user (the tenant's id for the person) -> internal ids."""
    store = state_of(request).store
    persona_id = user_id = None
    if persona is not None:
        if not isinstance(persona, str):
            raise HTTPError(400, "invalid_request", "'persona' must be a persona id or slug")
        record = await store.get_persona(principal.tenant_id, persona)
        if record is None:
            raise HTTPError(404, "unknown_persona", f"no persona {persona!r}")
        persona_id = record.id
    if principal.is_session:  # a session token sees its own user (and persona) only
        user = principal.user_id
        if principal.persona is not None:
            if persona_id not in (None, principal.persona):
                raise HTTPError(404, "unknown_persona", f"no persona {persona!r}")
            persona_id = principal.persona
    if user is not None:
        if not isinstance(user, str):
            raise HTTPError(400, "invalid_request", "'user' must be a string")
        found = await store.find_user(principal.tenant_id, user)
        if found is None:
            raise HTTPError(404, "user_not_found", f"no user {user!r}")
        user_id = found.id
    return persona_id, user_id


async def _owned(request: Request, principal: Principal) -> MemoryRecord:
    memory_id = request.path_params["memory_id"]
    record = await _memory_service(request).memories.get(principal.tenant_id, memory_id)
    if record is not None and principal.is_session:
        _, user_id = await _resolve(request, principal, None, None)
        if record.user_id != user_id or principal.persona not in (None, record.persona_id):
            record = None
    if record is None:
        raise HTTPError(404, "memory_not_found", f"no memory {memory_id!r}")
    return record


async def list_memories(request: Request) -> Response:
    principal = await require_principal(request)
    q = request.query_params
    persona_id, user_id = await _resolve(request, principal, q.get("persona"), q.get("user"))
    kind = q.get("kind")
    if kind is not None and kind not in KINDS:
        raise HTTPError(400, "invalid_request", f"kind must be one of {', '.join(KINDS)}")
    try:
        limit, offset = int(q.get("limit", "100")), int(q.get("offset", "0"))
    except ValueError as exc:
        raise HTTPError(400, "invalid_request", "limit and offset must be integers") from exc
    if not 1 <= limit <= 1000 or offset < 0:
        raise HTTPError(400, "invalid_request", "limit must be in 1..1000, offset >= 0")
    pinned = {"true": True, "false": False}.get(q.get("pinned", ""), None)
    records = await _memory_service(request).memories.list(
        principal.tenant_id,
        persona_id=persona_id,
        user_id=user_id,
        kind=kind,
        pinned=pinned,
        include_superseded=q.get("include_superseded") == "true",
        limit=limit,
        offset=offset,
    )
    return JSONResponse({"data": [r.to_public() for r in records]})


async def _embed(request: Request, text: str) -> tuple[list[float] | None, str | None]:
    embedder = _memory_service(request).embedder
    if embedder is None:
        return None, None
    try:
        return (await embedder.embed([text]))[0], embedder.model
    except Exception:  # keyword recall still finds it
        return None, None


async def create_memory(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True, role="moderator")
    body = await json_body(request)
    if not isinstance(body.get("persona"), str) or not isinstance(body.get("user"), str):
        raise HTTPError(400, "invalid_request", "'persona' and 'user' are required")
    persona_id, user_id = await _resolve(request, principal, body["persona"], body["user"])
    text = body.get("text")
    kind = body.get("kind", "fact")
    if not isinstance(text, str) or kind not in KINDS:
        raise HTTPError(400, "invalid_request", f"'text' is required; kind in {', '.join(KINDS)}")
    embedding, model = await _embed(request, text)
    try:
        record = await _memory_service(request).memories.add(
            principal.tenant_id,
            persona_id=persona_id,
            user_id=user_id,
            text=text,
            kind=kind,
            importance=body.get("importance", 0.5),
            pinned=bool(body.get("pinned", False)),
            embedding=embedding,
            embedding_model=model,
        )
    except (ValueError, TypeError) as exc:
        raise HTTPError(422, "invalid_memory", str(exc)) from exc
    return JSONResponse(record.to_public(), 201)


async def get_memory(request: Request) -> Response:
    principal = await require_principal(request)
    return JSONResponse((await _owned(request, principal)).to_public())


async def patch_memory(request: Request) -> Response:
    """Edit the text, the importance, or pin/unpin (``{"pinned": true}``)."""
    principal = await require_principal(request, api_key_only=True, role="moderator")
    record = await _owned(request, principal)
    body = await json_body(request)
    unknown = set(body) - {"text", "importance", "pinned"}
    if unknown:
        raise HTTPError(422, "invalid_memory", f"unknown fields: {', '.join(sorted(unknown))}")
    text = body.get("text")
    if text is not None and not isinstance(text, str):
        raise HTTPError(422, "invalid_memory", "'text' must be a string")
    embedding, model = await _embed(request, text) if text else (None, None)
    try:
        updated = await _memory_service(request).memories.update(
            principal.tenant_id,
            record.id,
            text=text,
            importance=body.get("importance"),
            pinned=body.get("pinned"),
            embedding=embedding,
            embedding_model=model,
        )
    except (ValueError, TypeError) as exc:
        raise HTTPError(422, "invalid_memory", str(exc)) from exc
    if updated is None:
        raise HTTPError(404, "memory_not_found", f"no memory {record.id!r}")
    return JSONResponse(updated.to_public())


async def delete_memory(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True, role="moderator")
    record = await _owned(request, principal)
    await _memory_service(request).memories.delete(principal.tenant_id, record.id)
    return Response(status_code=204)


routes = [
    Route("/v1/memories", list_memories, methods=["GET"]),
    Route("/v1/memories", create_memory, methods=["POST"]),
    Route("/v1/memories/{memory_id}", get_memory, methods=["GET"]),
    Route("/v1/memories/{memory_id}", patch_memory, methods=["PATCH"]),
    Route("/v1/memories/{memory_id}", delete_memory, methods=["DELETE"]),
]
