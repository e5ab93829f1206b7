"""Salon's HTTP API: health, sessions, personas, conversation history."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agents.cards import CardError, read_png_card, to_card_v2, to_card_v3, write_png_card
from agents.personas import create_persona, public_persona, spec_of, update_persona
from memory.records import PersonaRecord
from memory.store import Conflict
from server.auth import Principal
from server.http_util import (
    HTTPError,
    json_body,
    query_int,
    read_limited,
    require_principal,
    state_of,
)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = state_of(request)
    checks: dict[str, str] = {}
    ok = True
    probes = (
        ("database", state.store.ping),
        ("event_log", state.events.ping),
        ("hot_state", state.hot.ping),
        ("jobs", state.jobs.ping),
    )
    for name, probe in probes:
        try:
            await probe()
            checks[name] = "ok"
        except Exception as exc:
            ok = False
            checks[name] = f"error: {type(exc).__name__}"
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
    )


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def create_session(request: Request) -> Response:
    """Mint a short-lived session token for one user (and optionally one persona)."""
    principal = await require_principal(request, api_key_only=True)
    state = state_of(request)
    body = await json_body(request)
    user = body.get("user")
    if isinstance(user, str):
        user = {"id": user}
    if (
        not isinstance(user, dict)
        or not isinstance(user.get("id"), str)
        or not user["id"].strip()
        or len(user["id"]) > 200
    ):
        raise HTTPError(
            400, "invalid_request", "'user' must be an object with an 'id' of 1..200 characters"
        )
    name = user.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise HTTPError(
            400, "invalid_request", "'user.name' must be a string of at most 200 characters"
        )
    persona = body.get("persona")
    if persona is not None:
        if not isinstance(persona, str):
            raise HTTPError(400, "invalid_request", "'persona' must be a persona id or slug")
        record = await state.store.get_persona(principal.tenant_id, persona)
        if record is None:
            raise HTTPError(404, "unknown_persona", f"no persona {persona!r}")
        persona = record.id
    ttl = body.get("ttl_seconds", state.settings.session_token_ttl_seconds)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= 86_400:
        raise HTTPError(400, "invalid_request", "'ttl_seconds' must be an integer in 1..86400")
    token, expires = state.tokens.mint(
        tenant_id=principal.tenant_id,
        user_id=user["id"],
        user_name=name,
        persona=persona,
        ttl_seconds=ttl,
    )
    return JSONResponse(
        {
            "token": token,
            "expires_at": expires,
            "user": {"id": user["id"], "name": name},
            "persona": persona,
        },
        201,
    )


# What a browser or app (session token) may see of a persona: not its prompts.
CLIENT_FIELDS = (
    "id",
    "slug",
    "name",
    "nickname",
    "description",
    "first_mes",
    "alternate_greetings",
    "tags",
    "creator",
    "character_version",
    "voice",
    "created_at",
    "updated_at",
)


def _persona_for(principal: Principal, record: PersonaRecord) -> dict[str, Any]:
    data = public_persona(record)
    if principal.is_session:
        return {k: data[k] for k in CLIENT_FIELDS if k in data}
    return data


async def list_personas(request: Request) -> Response:
    principal = await require_principal(request)
    records = await state_of(request).store.list_personas(principal.tenant_id)
    if principal.is_session and principal.persona is not None:
        records = [r for r in records if r.id == principal.persona]
    return JSONResponse({"data": [_persona_for(principal, r) for r in records]})


MAX_CARD_PNG = 8 * 1024 * 1024


async def post_persona(request: Request) -> Response:
    """Create from Salon JSON or a Character Card; ``Content-Type: image/png``: a PNG card."""
    principal = await require_principal(request, api_key_only=True)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "image/png":
        try:
            body = read_png_card(await read_limited(request, MAX_CARD_PNG))
        except CardError as exc:
            raise HTTPError(422, "invalid_persona", str(exc)) from exc
    else:
        body = await json_body(request)
    try:
        record = await create_persona(state_of(request).store, principal.tenant_id, body)
    except CardError as exc:
        raise HTTPError(422, "invalid_persona", str(exc)) from exc
    except Conflict as exc:
        raise HTTPError(409, "conflict", str(exc)) from exc
    return JSONResponse(public_persona(record), 201)


async def _persona_or_404(request: Request, tenant_id: str) -> Any:
    ref = request.path_params["persona_id"]
    record = await state_of(request).store.get_persona(tenant_id, ref)
    if record is None:
        raise HTTPError(404, "unknown_persona", f"no persona {ref!r}")
    return record


async def get_persona(request: Request) -> Response:
    principal = await require_principal(request)
    record = await _persona_or_404(request, principal.tenant_id)
    if principal.is_session and principal.persona not in (None, record.id):
        raise HTTPError(404, "unknown_persona", f"no persona {request.path_params['persona_id']!r}")
    return JSONResponse(_persona_for(principal, record))


async def patch_persona(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True)
    record = await _persona_or_404(request, principal.tenant_id)
    body = await json_body(request)
    try:
        updated = await update_persona(
            state_of(request).store, principal.tenant_id, record.id, body
        )
    except CardError as exc:
        raise HTTPError(422, "invalid_persona", str(exc)) from exc
    except Conflict as exc:
        raise HTTPError(409, "conflict", str(exc)) from exc
    if updated is None:
        raise HTTPError(404, "unknown_persona", "persona was deleted")
    return JSONResponse(public_persona(updated))


async def delete_persona(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True)
    record = await _persona_or_404(request, principal.tenant_id)
    await state_of(request).store.delete_persona(principal.tenant_id, record.id)
    return Response(status_code=204)


async def get_persona_card(request: Request) -> Response:
    """Export as a Character Card: V2 JSON (default), ``?format=v3`` or ``?format=png``."""
    principal = await require_principal(request, api_key_only=True)  # cards carry the prompts
    spec = spec_of(await _persona_or_404(request, principal.tenant_id))
    fmt = request.query_params.get("format", "v2")
    if fmt == "v2":
        return JSONResponse(to_card_v2(spec))
    if fmt == "v3":
        return JSONResponse(to_card_v3(spec))
    if fmt == "png":
        return Response(write_png_card(spec), media_type="image/png")
    raise HTTPError(400, "invalid_request", "format must be v2, v3 or png")


async def conversation_messages(request: Request) -> Response:
    """History of a conversation, oldest first: ``?limit=`` (1..500) and ``?before=<message id>``."""
    principal = await require_principal(request)
    state = state_of(request)
    cid = request.path_params["conversation_id"]
    conv = await state.store.get_conversation(principal.tenant_id, cid)
    if conv is not None and principal.is_session:
        user = await state.store.get_user(principal.tenant_id, conv.user_id)
        if (
            user is None
            or user.external_id != principal.user_id
            or principal.persona not in (None, conv.persona_id)
        ):
            conv = None  # not this token's conversation: indistinguishable from none
    if conv is None:
        raise HTTPError(404, "conversation_not_found", f"no conversation {cid!r}")
    limit = query_int(request, "limit", 100, 1, 500)
    messages = await state.store.list_messages(
        principal.tenant_id, cid, limit=limit, before=request.query_params.get("before")
    )
    data = [m.to_public() for m in messages]
    if state.extensions.analysis is not None:  # each message's ``analysis`` (docs/analysis.md)
        data = await state.extensions.analysis.attach(principal.tenant_id, data)
    else:
        data = [{**m, "analysis": None} for m in data]
    return JSONResponse(
        {
            "conversation_id": cid,
            "persona_id": conv.persona_id,
            "last_seq": max(conv.last_seq, await state.events.latest_seq(cid)),
            "data": data,
        }
    )


async def conversation_presence(request: Request) -> Response:
    """Sockets on a conversation right now, on any replica (API key only)."""
    principal = await require_principal(request, api_key_only=True)
    state = state_of(request)
    cid = request.path_params["conversation_id"]
    if await state.store.get_conversation(principal.tenant_id, cid) is None:
        raise HTTPError(404, "conversation_not_found", f"no conversation {cid!r}")
    members = await state.hot.presence(f"conv:{cid}")
    return JSONResponse(
        {
            "conversation_id": cid,
            "data": [{"connection": k, **v} for k, v in sorted(members.items())],
        }
    )


routes = [
    Route("/healthz", healthz),
    Route("/readyz", readyz),
    Route("/metrics", metrics),
    Route("/v1/sessions", create_session, methods=["POST"]),
    Route("/v1/personas", list_personas, methods=["GET"]),
    Route("/v1/personas", post_persona, methods=["POST"]),
    Route("/v1/personas/{persona_id}", get_persona, methods=["GET"]),
    Route("/v1/personas/{persona_id}", patch_persona, methods=["PATCH"]),
    Route("/v1/personas/{persona_id}", delete_persona, methods=["DELETE"]),
    Route("/v1/personas/{persona_id}/card", get_persona_card, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}/messages", conversation_messages, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}/presence", conversation_presence, methods=["GET"]),
]
