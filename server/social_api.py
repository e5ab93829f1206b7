"""Connected accounts, tenant apps, the reply queue and the delivery log (API key only).

- ``POST/GET /v1/social/apps``, ``DELETE /v1/social/apps/{id}``: a tenant's
  own Meta or X app (its webhook secrets, write-only).
- ``POST/GET /v1/social/accounts``, ``GET/PATCH/DELETE
  /v1/social/accounts/{id}``: a platform account mapped to a persona, with
  its credentials (write-only) and reply policy.
- ``GET /v1/replies?status=pending``, ``GET /v1/replies/{id}``, ``POST
  /v1/replies/{id}/approve`` (optionally with the edited ``text``), ``PATCH
  /v1/replies/{id}`` (edit while pending), ``POST /v1/replies/{id}/reject``:
  the operators' queue; every change is also an event on ``ops:<tenant>``.
- ``GET /v1/social/deliveries``: the webhook/poll delivery log.

docs/integrations.md.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from integrations.social.base import PLATFORMS
from integrations.social.policy import check_policy
from memory.social_store import COMMENT_STATES
from server.auth import Principal
from server.http_util import HTTPError, json_body, require_principal, state_of

APP_SECRETS = {"meta": ("app_secret", "verify_token"), "x": ("consumer_secret",)}
MAX_REPLY_CHARS = 2000


async def _context(request: Request, *, role: str | None = None) -> tuple[Principal, Any]:
    principal = await require_principal(request, api_key_only=True, role=role)
    service = state_of(request).extensions.social
    if service is None:
        raise HTTPError(
            404, "social_disabled", "comment automation is disabled (SALON_SOCIAL_ENABLED)"
        )
    return principal, service


def _string(
    body: dict[str, Any], key: str, *, required: bool = True, limit: int = 200
) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise HTTPError(400, "invalid_request", f"'{key}' must be a non-empty string (<= {limit})")
    return value.strip()


# -- apps ---------------------------------------------------------------------------


async def create_app(request: Request) -> Response:
    principal, service = await _context(request)
    body = await json_body(request)
    platform = body.get("platform")
    if platform not in APP_SECRETS:
        raise HTTPError(400, "invalid_request", "'platform' must be 'meta' or 'x'")
    secrets = {key: _string(body, key, limit=500) for key in APP_SECRETS[platform]}
    name = _string(body, "name", required=False) or platform
    app_id = await service.store.create_app(
        principal.tenant_id, platform, name, service.vault.seal(secrets)
    )
    return JSONResponse(
        {
            "id": app_id,
            "platform": platform,
            "name": name,
            "webhook_url": f"/v1/webhooks/{platform}?app={app_id}",
        },
        201,
    )


async def list_apps(request: Request) -> Response:
    principal, service = await _context(request)
    apps = await service.store.list_apps(principal.tenant_id)
    data = [{**a, "created_at": a["created_at"].isoformat()} for a in apps]
    return JSONResponse({"object": "list", "data": data})


async def delete_app(request: Request) -> Response:
    principal, service = await _context(request)
    if not await service.store.delete_app(principal.tenant_id, request.path_params["app_id"]):
        raise HTTPError(404, "app_not_found", "no such app")
    return JSONResponse({"deleted": True})


# -- accounts -------------------------------------------------------------------------


def _policy(value: Any) -> dict[str, Any]:
    try:
        return check_policy(value)
    except ValueError as exc:
        raise HTTPError(400, "invalid_policy", str(exc)) from exc


def _credentials(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise HTTPError(400, "invalid_request", "'credentials' must be an object")
    return value


async def _persona_id(request: Request, principal: Principal, persona: Any) -> str:
    if not isinstance(persona, str) or not persona:
        raise HTTPError(400, "invalid_request", "'persona' must be a persona id or slug")
    record = await state_of(request).store.get_persona(principal.tenant_id, persona)
    if record is None:
        raise HTTPError(404, "unknown_persona", f"no persona {persona!r}")
    return str(record.id)


async def create_account(request: Request) -> Response:
    principal, service = await _context(request)
    body = await json_body(request)
    unknown = set(body) - {
        "platform",
        "account_id",
        "persona",
        "name",
        "credentials",
        "policy",
        "app",
    }
    if unknown:
        raise HTTPError(400, "invalid_request", f"unknown fields: {', '.join(sorted(unknown))}")
    platform = body.get("platform")
    if platform not in PLATFORMS:
        raise HTTPError(400, "invalid_request", f"'platform' must be one of {', '.join(PLATFORMS)}")
    account = await service.store.create_account(
        principal.tenant_id,
        platform=platform,
        account_id=_string(body, "account_id"),
        persona_id=await _persona_id(request, principal, body.get("persona")),
        name=_string(body, "name", required=False) or "",
        credentials=service.vault.seal(_credentials(body.get("credentials"))),
        policy=_policy(body.get("policy")),
        app_id=_string(body, "app", required=False),
    )
    if account is None:
        raise HTTPError(409, "account_connected", "this platform account is already connected")
    return JSONResponse(account.to_public(), 201)


async def list_accounts(request: Request) -> Response:
    principal, service = await _context(request)
    accounts = await service.store.list_accounts(principal.tenant_id)
    return JSONResponse({"object": "list", "data": [a.to_public() for a in accounts]})


async def _account(request: Request, principal: Principal, service: Any) -> Any:
    account = await service.store.get_account(
        principal.tenant_id, request.path_params["account_id"]
    )
    if account is None:
        raise HTTPError(404, "account_not_found", "no such account")
    return account


async def get_account(request: Request) -> Response:
    principal, service = await _context(request)
    return JSONResponse((await _account(request, principal, service)).to_public())


async def update_account(request: Request) -> Response:
    principal, service = await _context(request)
    account = await _account(request, principal, service)
    body = await json_body(request)
    unknown = set(body) - {"persona", "name", "credentials", "policy", "enabled"}
    if unknown:
        raise HTTPError(400, "invalid_request", f"unknown fields: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    if "persona" in body:
        values["persona_id"] = await _persona_id(request, principal, body["persona"])
    if "name" in body:
        values["name"] = _string(body, "name")
    if "credentials" in body:
        values["credentials"] = service.vault.seal(_credentials(body["credentials"]))
    if "policy" in body:
        values["policy"] = _policy({**account.policy, **(body["policy"] or {})})
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise HTTPError(400, "invalid_request", "'enabled' must be true or false")
        values["enabled"] = body["enabled"]
    updated = await service.store.update_account(principal.tenant_id, account.id, **values)
    return JSONResponse(updated.to_public())


async def delete_account(request: Request) -> Response:
    principal, service = await _context(request)
    account = await _account(request, principal, service)
    await service.store.delete_account(principal.tenant_id, account.id)
    return JSONResponse({"deleted": True})


# -- the reply queue ----------------------------------------------------------------------


async def list_replies(request: Request) -> Response:
    principal, service = await _context(request)
    q = request.query_params
    states = [s for s in q.get("status", "").split(",") if s]
    if any(s not in COMMENT_STATES for s in states):
        raise HTTPError(400, "invalid_request", f"'status': {', '.join(COMMENT_STATES)}")
    try:
        limit = min(500, max(1, int(q.get("limit", "100"))))
    except ValueError as exc:
        raise HTTPError(400, "invalid_request", "'limit' must be a number") from exc
    items = await service.store.list_comments(
        principal.tenant_id, status=states or None, account_pk=q.get("account"), limit=limit
    )
    return JSONResponse({"object": "list", "data": [c.to_public() for c in items]})


async def _comment(request: Request, principal: Principal, service: Any) -> Any:
    comment = await service.store.get_comment(principal.tenant_id, request.path_params["reply_id"])
    if comment is None:
        raise HTTPError(404, "reply_not_found", "no such reply")
    return comment


def _operator(principal: Principal) -> str:
    return principal.actor


def _text(body: dict[str, Any], *, required: bool) -> str | None:
    text = body.get("text")
    if text is None and not required:
        return None
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_REPLY_CHARS:
        raise HTTPError(400, "invalid_request", f"'text' must be 1..{MAX_REPLY_CHARS} characters")
    return text.strip()


async def get_reply(request: Request) -> Response:
    principal, service = await _context(request)
    return JSONResponse((await _comment(request, principal, service)).to_public())


async def approve_reply(request: Request) -> Response:
    principal, service = await _context(request, role="moderator")
    comment = await _comment(request, principal, service)
    body = await json_body(request) if await request.body() else {}
    done = await service.approve(
        principal.tenant_id, comment.id, _operator(principal), _text(body, required=False)
    )
    if done is None:
        raise HTTPError(409, "not_pending", f"the reply is {comment.status}, not pending")
    return JSONResponse(done.to_public())


async def edit_reply(request: Request) -> Response:
    principal, service = await _context(request, role="moderator")
    comment = await _comment(request, principal, service)
    body = await json_body(request)
    done = await service.edit(
        principal.tenant_id, comment.id, _operator(principal), _text(body, required=True)
    )
    if done is None:
        raise HTTPError(409, "not_pending", f"the reply is {comment.status}, not pending")
    return JSONResponse(done.to_public())


async def reject_reply(request: Request) -> Response:
    principal, service = await _context(request, role="moderator")
    comment = await _comment(request, principal, service)
    body = await json_body(request) if await request.body() else {}
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 200):
        raise HTTPError(400, "invalid_request", "'reason' must be a short string")
    done = await service.reject(principal.tenant_id, comment.id, _operator(principal), reason)
    if done is None:
        raise HTTPError(409, "not_pending", f"the reply is {comment.status}: it cannot be rejected")
    return JSONResponse(done.to_public())


async def list_deliveries(request: Request) -> Response:
    _principal, service = await _context(request)
    return JSONResponse({"object": "list", "data": await service.store.deliveries(200)})


routes = [
    Route("/v1/social/apps", create_app, methods=["POST"]),
    Route("/v1/social/apps", list_apps, methods=["GET"]),
    Route("/v1/social/apps/{app_id}", delete_app, methods=["DELETE"]),
    Route("/v1/social/accounts", create_account, methods=["POST"]),
    Route("/v1/social/accounts", list_accounts, methods=["GET"]),
    Route("/v1/social/accounts/{account_id}", get_account, methods=["GET"]),
    Route("/v1/social/accounts/{account_id}", update_account, methods=["PATCH"]),
    Route("/v1/social/accounts/{account_id}", delete_account, methods=["DELETE"]),
    Route("/v1/social/deliveries", list_deliveries, methods=["GET"]),
    Route("/v1/replies", list_replies, methods=["GET"]),
    Route("/v1/replies/{reply_id}", get_reply, methods=["GET"]),
    Route("/v1/replies/{reply_id}", edit_reply, methods=["PATCH"]),
    Route("/v1/replies/{reply_id}/approve", approve_reply, methods=["POST"]),
    Route("/v1/replies/{reply_id}/reject", reject_reply, methods=["POST"]),
]
