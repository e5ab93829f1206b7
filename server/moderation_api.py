"""HTTP routes of the moderation part: the tenant's policy and the flags queue.

All need a tenant API key (session tokens are for end users; the policy and
the queue are operator business). docs/moderation.md documents them.

- ``GET /v1/moderation/policy``, ``PUT /v1/moderation/policy``
- ``GET /v1/flags`` (``status``, ``persona``, ``user``, ``conversation``,
  ``limit``, ``cursor``), ``GET /v1/flags/{id}``, ``PATCH /v1/flags/{id}``
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from server.auth import Principal
from server.http_util import HTTPError, json_body, query_int, require_principal, state_of

FLAG_STATUSES = ("open", "reviewed", "dismissed")


def _service(request: Request) -> Any:
    service = state_of(request).extensions.moderation
    if service is None:
        raise HTTPError(
            404, "moderation_disabled", "moderation is disabled (SALON_MODERATION_ENABLED)"
        )
    return service


async def _admin(request: Request) -> Principal:
    principal = await require_principal(request, api_key_only=True, role="admin")
    return principal


async def _moderator(request: Request) -> Principal:
    """Flags: moderators see and resolve them (the policy stays the admin's)."""
    return await require_principal(request, api_key_only=True, role="moderator")


async def get_policy(request: Request) -> Response:
    principal = await _admin(request)
    service = _service(request)
    policy = await service.policy(principal.tenant_id)
    return JSONResponse(_policy_body(service, policy))


async def put_policy(request: Request) -> Response:
    """Replace the policy; fields left out take their defaults."""
    from agents.moderation.policy import PolicyError

    principal = await _admin(request)
    service = _service(request)
    body = await json_body(request)
    try:
        policy = await service.set_policy(principal.tenant_id, body)
    except PolicyError as exc:
        raise HTTPError(422, "invalid_policy", str(exc)) from exc
    return JSONResponse(_policy_body(service, policy))


def _policy_body(service: Any, policy: Any) -> dict[str, Any]:
    body: dict[str, Any] = policy.model_dump(mode="json")
    # Says whether toxicity rules can take effect on this server at all.
    body["toxicity_classifier"] = service.classifier.name if service.classifier else None
    return body


async def list_flags(request: Request) -> Response:
    principal = await _moderator(request)
    service = _service(request)
    store = state_of(request).store
    q = request.query_params
    status = q.get("status")
    if status is not None and status not in FLAG_STATUSES:
        raise HTTPError(400, "invalid_request", f"status must be one of {', '.join(FLAG_STATUSES)}")
    limit = query_int(request, "limit", 50, 1, 500)
    persona_id = user_id = None
    empty = JSONResponse({"data": [], "next_cursor": None})
    if q.get("persona"):
        persona = await store.get_persona(principal.tenant_id, q["persona"])
        if persona is None:
            return empty  # an unknown persona has no flags
        persona_id = persona.id
    if q.get("user"):
        user = await store.find_user(principal.tenant_id, q["user"])
        if user is None:
            return empty
        user_id = user.id
    flags = await service.store.list_flags(
        principal.tenant_id,
        status=status,
        persona_id=persona_id,
        user_id=user_id,
        conversation_id=q.get("conversation") or None,
        before=q.get("cursor") or None,
        limit=limit + 1,  # one more tells whether another page exists
    )
    more = len(flags) > limit
    flags = flags[:limit]
    return JSONResponse(
        {
            "data": [f.to_public() for f in flags],
            "next_cursor": flags[-1].id if more and flags else None,
        }
    )


async def get_flag(request: Request) -> Response:
    principal = await _moderator(request)
    flag_id = request.path_params["flag_id"]
    flag = await _service(request).store.get_flag(principal.tenant_id, flag_id)
    if flag is None:
        raise HTTPError(404, "flag_not_found", f"no flag {flag_id!r}")
    return JSONResponse(flag.to_public())


async def patch_flag(request: Request) -> Response:
    """Resolve a flag: ``{"status": "reviewed" | "dismissed" | "open", "note"?}``."""
    principal = await _moderator(request)
    flag_id = request.path_params["flag_id"]
    body = await json_body(request)
    unknown = set(body) - {"status", "note"}
    if unknown:
        raise HTTPError(422, "invalid_flag", f"unknown fields: {', '.join(sorted(unknown))}")
    status, note = body.get("status"), body.get("note")
    if status not in FLAG_STATUSES:
        raise HTTPError(422, "invalid_flag", f"status must be one of {', '.join(FLAG_STATUSES)}")
    if note is not None and (not isinstance(note, str) or len(note) > 2000):
        raise HTTPError(422, "invalid_flag", "note must be a string of at most 2000 characters")
    flag = await _service(request).store.resolve_flag(
        principal.tenant_id, flag_id, status=status, note=note
    )
    if flag is None:
        raise HTTPError(404, "flag_not_found", f"no flag {flag_id!r}")
    return JSONResponse(flag.to_public())


routes: list[BaseRoute] = [
    Route("/v1/moderation/policy", get_policy, methods=["GET"]),
    Route("/v1/moderation/policy", put_policy, methods=["PUT"]),
    Route("/v1/flags", list_flags, methods=["GET"]),
    Route("/v1/flags/{flag_id}", get_flag, methods=["GET"]),
    Route("/v1/flags/{flag_id}", patch_flag, methods=["PATCH"]),
]
