"""``/v1/conversations/{id}/takeover``: an operator pauses the bot and speaks in its place.

- ``POST .../takeover`` ``{"mode"?: "persona" | "operator", "name"?}``: take over
  (a reply in flight is cancelled); 409 when someone else has it.
- ``POST .../takeover/messages`` ``{"text"}``: the operator's message, delivered
  to the person as the persona's reply (``mode: operator`` marks it
  ``speaker: operator``).
- ``GET .../takeover``: the active takeover (or null) and the recorded ones.
- ``DELETE .../takeover``: hand back to the bot.

Tenant credentials only (moderator role; GET: viewer). agents/takeover.py has the semantics; docs/protocol.md the events.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agents.takeover import TakeoverError, TakeoverService
from server.http_util import HTTPError, json_body, require_principal, state_of

STATUS = {
    "conversation_not_found": 404,
    "already_taken_over": 409,
    "not_taken_over": 409,
    "not_yours": 403,
    "invalid_request": 400,
}


async def _context(request: Request) -> tuple[str, str, TakeoverService, dict[str, Any]]:
    # Watching is a viewer's; taking over and speaking are a moderator's.
    role = "viewer" if request.method == "GET" else "moderator"
    principal = await require_principal(request, api_key_only=True, role=role)
    service: TakeoverService = state_of(request).extensions.takeover
    body = await json_body(request) if await request.body() else {}
    # A signed-in operator is recorded, shown and checked by their own name, whatever
    # the body says; a backend with an API key names the person it acts for.
    if principal.kind == "operator" and principal.name:
        name = principal.name
    else:
        name = body["name"] if "name" in body else principal.name or "operator"
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise HTTPError(400, "invalid_request", "'name' must be a short string")
    conv_id = request.path_params["conversation_id"]
    if await state_of(request).store.get_conversation(principal.tenant_id, conv_id) is None:
        raise HTTPError(404, "conversation_not_found", f"no conversation {conv_id!r}")
    return principal.tenant_id, conv_id, service, {**body, "name": name.strip()}


def _raise(exc: TakeoverError) -> None:
    raise HTTPError(STATUS.get(exc.code, 400), exc.code, exc.message) from exc


async def take_over(request: Request) -> Response:
    tenant, conv_id, service, body = await _context(request)
    try:
        record = await service.start(
            tenant, conv_id, body["name"], mode=body.get("mode", "persona")
        )
    except TakeoverError as exc:
        _raise(exc)
        raise
    return JSONResponse(record.to_public(), 201)


async def say(request: Request) -> Response:
    tenant, conv_id, service, body = await _context(request)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > 8000:
        raise HTTPError(400, "invalid_request", "'text' must be 1..8000 characters")
    try:
        done = await service.say(tenant, conv_id, body["name"], text)
    except TakeoverError as exc:
        _raise(exc)
        raise
    return JSONResponse(done, 201)


async def status(request: Request) -> Response:
    tenant, conv_id, service, _ = await _context(request)
    history = await service.takeovers.for_conversation(tenant, conv_id)
    active = await service.active(conv_id)
    return JSONResponse(
        {
            "active": next(
                (r.to_public() for r in history if active and r.id == active["id"]), None
            ),
            "history": [r.to_public() for r in history],
        }
    )


async def hand_back(request: Request) -> Response:
    tenant, conv_id, service, body = await _context(request)
    try:
        record = await service.end(tenant, conv_id, body["name"])
    except TakeoverError as exc:
        _raise(exc)
        raise
    return JSONResponse(record.to_public())


routes = [
    Route("/v1/conversations/{conversation_id}/takeover", take_over, methods=["POST"]),
    Route("/v1/conversations/{conversation_id}/takeover", status, methods=["GET"]),
    Route("/v1/conversations/{conversation_id}/takeover", hand_back, methods=["DELETE"]),
    Route("/v1/conversations/{conversation_id}/takeover/messages", say, methods=["POST"]),
]
