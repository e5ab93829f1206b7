"""The operator console's HTTP side: sign-in, operators, branding, live conversations.

- ``POST /v1/console/login``: ``{"email", "password"}`` (an operator account) or
  ``{"api_key"}`` -> a console token (server/console_auth.py) and who you are.
- ``GET /v1/console/me``: the signed-in principal, its tenant and the branding.
- ``GET/POST /v1/operators``, ``PATCH/DELETE /v1/operators/{id}``: accounts (admin).
- ``GET/PUT /v1/branding``: name, logo and colours of the console and the chat
  widget (read: anyone of the tenant, session tokens too; write: admin).
- ``GET /v1/conversations``: the tenant's conversations by latest activity
  (``?active=true``: within ``SALON_CONSOLE_ACTIVE_MINUTES``), with who is connected
  and whether an operator has taken it over.

The console's pages are served by server/console_static.py; its live channel is
server/ops_ws.py. docs/console.md describes all of it.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from memory.console_store import ROLES, BrandingRecord, recent_conversations
from memory.store import Conflict
from server.auth import Principal
from server.console_auth import MAX_PASSWORD, MIN_PASSWORD, LoginError, hash_password
from server.http_util import HTTPError, json_body, query_int, require_principal, state_of

LOGIN_WINDOW = 300.0
DEFAULT_COLORS = {
    "primary": "#4f46e5",
    "accent": "#0ea5e9",
    "background": "#f8fafc",
    "surface": "#ffffff",
    "text": "#0f172a",
}
DEFAULT_NAME = "Salon"
MAX_LOGO_CHARS = 360_000  # a data: URL of a 256 KiB image, base64
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_DATA_LOGO = re.compile(r"^data:image/(png|jpeg|webp|gif|svg\+xml);base64,[A-Za-z0-9+/=]+$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


def _console(request: Request) -> Any:
    return state_of(request).console


async def _tenant(request: Request, tenant_id: str) -> dict[str, Any]:
    tenant = await state_of(request).store.get_tenant(tenant_id)
    return {"id": tenant_id, "name": tenant.name if tenant else None}


def _whoami(principal: Principal) -> dict[str, Any]:
    return {
        "kind": principal.kind,
        "role": principal.role,
        "name": principal.name,
        "operator_id": principal.operator_id,
    }


# -- sign-in ------------------------------------------------------------------


async def login(request: Request) -> Response:
    state = state_of(request)
    body = await json_body(request, max_bytes=16 * 1024)
    client = request.client.host if request.client else "unknown"
    limit = state.settings.console_login_attempts
    # Every attempt counts before the password is checked (a burst sent at once cannot
    # slip past a count taken after the check), per account tried and per client
    # address (more: offices share one). Past the limit: 429 for the rest of the window.
    keys = {f"ip:{client}": limit * 5}
    if isinstance(body.get("email"), str):
        keys[f"id:{body['email'].strip().lower()[:320]}"] = limit
    for key, allowed in keys.items():
        if not await state.hot.hit(f"console-login:{key}", allowed, LOGIN_WINDOW):
            raise HTTPError(429, "rate_limited", "too many sign-in attempts; wait a few minutes")
    try:
        if "api_key" in body:
            if not isinstance(body["api_key"], str) or not body["api_key"]:
                raise HTTPError(400, "invalid_request", "'api_key' must be a string")
            login = await _console(request).login_api_key(body["api_key"])
        else:
            email, password = body.get("email"), body.get("password")
            if not isinstance(email, str) or not isinstance(password, str):
                raise HTTPError(400, "invalid_request", "give {'email', 'password'} or {'api_key'}")
            login = await _console(request).login_password(email, password)
    except LoginError as exc:
        raise HTTPError(401, "invalid_credentials", "wrong email, password or API key") from exc
    principal = login.principal
    return JSONResponse(
        {
            "token": login.token,
            "expires_at": login.expires_at,
            **_whoami(principal),
            "operator": login.operator.to_public() if login.operator else None,
            "tenant": await _tenant(request, principal.tenant_id),
        }
    )


async def me(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True)
    return JSONResponse(
        {
            **_whoami(principal),
            "tenant": await _tenant(request, principal.tenant_id),
            "branding": _branding_body(
                await _console(request).operators.get_branding(principal.tenant_id)
            ),
        }
    )


# -- operators ----------------------------------------------------------------


def _role(value: Any) -> str:
    if value not in ROLES:
        raise HTTPError(422, "invalid_operator", f"role must be one of {', '.join(ROLES)}")
    return str(value)


def _password(value: Any) -> str:
    if not isinstance(value, str) or not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise HTTPError(
            422, "invalid_operator", f"password must be {MIN_PASSWORD}..{MAX_PASSWORD} characters"
        )
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise HTTPError(422, "invalid_operator", "name must be 1..200 characters")
    return value.strip()


async def list_operators(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True, role="admin")
    records = await _console(request).operators.list_operators(principal.tenant_id)
    return JSONResponse({"data": [r.to_public() for r in records]})


async def create_operator(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True, role="admin")
    body = await json_body(request, max_bytes=16 * 1024)
    unknown = set(body) - {"email", "name", "role", "password"}
    if unknown:
        raise HTTPError(422, "invalid_operator", f"unknown fields: {', '.join(sorted(unknown))}")
    email = body.get("email")
    if not isinstance(email, str) or not _EMAIL.match(email.strip()):
        raise HTTPError(422, "invalid_operator", "email must be an email address")
    password = _password(body.get("password"))
    digest = await asyncio.to_thread(hash_password, password)
    try:
        record = await _console(request).operators.create_operator(
            principal.tenant_id,
            email=email,
            name=_name(body.get("name", email.split("@")[0])),
            role=_role(body.get("role", "viewer")),
            password_hash=digest,
        )
    except Conflict as exc:
        raise HTTPError(409, "conflict", "an operator with this email already exists") from exc
    return JSONResponse(record.to_public(), 201)


async def update_operator(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True, role="admin")
    body = await json_body(request, max_bytes=16 * 1024)
    unknown = set(body) - {"name", "role", "password", "disabled"}
    if unknown:
        raise HTTPError(422, "invalid_operator", f"unknown fields: {', '.join(sorted(unknown))}")
    operator_id = request.path_params["operator_id"]
    if operator_id == principal.operator_id and (
        body.get("disabled") or body.get("role", "admin") != "admin"
    ):
        raise HTTPError(409, "cannot_demote_self", "ask another admin to change your own account")
    if "disabled" in body and not isinstance(body["disabled"], bool):
        raise HTTPError(422, "invalid_operator", "disabled must be true or false")
    digest = None
    if "password" in body:
        digest = await asyncio.to_thread(hash_password, _password(body["password"]))
    record = await _console(request).operators.update_operator(
        principal.tenant_id,
        operator_id,
        name=_name(body["name"]) if "name" in body else None,
        role=_role(body["role"]) if "role" in body else None,
        password_hash=digest,
        disabled=body.get("disabled"),
    )
    if record is None:
        raise HTTPError(404, "operator_not_found", f"no operator {operator_id!r}")
    return JSONResponse(record.to_public())


async def delete_operator(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True, role="admin")
    operator_id = request.path_params["operator_id"]
    if operator_id == principal.operator_id:
        raise HTTPError(409, "cannot_demote_self", "ask another admin to remove your own account")
    if not await _console(request).operators.delete_operator(principal.tenant_id, operator_id):
        raise HTTPError(404, "operator_not_found", f"no operator {operator_id!r}")
    return Response(status_code=204)


# -- branding -----------------------------------------------------------------


def _branding_body(record: BrandingRecord | None) -> dict[str, Any]:
    if record is None:
        return {"name": DEFAULT_NAME, "logo": None, "colors": dict(DEFAULT_COLORS)}
    return {"name": record.name, "logo": record.logo, "colors": {**DEFAULT_COLORS, **record.colors}}


async def get_branding(request: Request) -> Response:
    principal = await require_principal(request)  # session tokens too: the chat widget
    record = await _console(request).operators.get_branding(principal.tenant_id)
    return JSONResponse(_branding_body(record))


async def put_branding(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True, role="admin")
    body = await json_body(request, max_bytes=MAX_LOGO_CHARS + 16 * 1024)
    unknown = set(body) - {"name", "logo", "colors"}
    if unknown:
        raise HTTPError(422, "invalid_branding", f"unknown fields: {', '.join(sorted(unknown))}")
    name = body.get("name", DEFAULT_NAME)
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise HTTPError(422, "invalid_branding", "name must be 1..100 characters")
    logo = body.get("logo")
    if logo is not None:
        if not isinstance(logo, str) or len(logo) > MAX_LOGO_CHARS:
            raise HTTPError(422, "invalid_branding", "logo must be a data: URL of at most 256 KiB")
        if not (_DATA_LOGO.match(logo) or (logo.startswith("https://") and len(logo) <= 2000)):
            raise HTTPError(
                422,
                "invalid_branding",
                "logo must be a base64 data: URL of a PNG, JPEG, WebP, GIF or SVG image, "
                "or an https:// URL",
            )
    colors = body.get("colors", {})
    if not isinstance(colors, dict):
        raise HTTPError(422, "invalid_branding", "colors must be an object")
    for key, value in colors.items():
        if key not in DEFAULT_COLORS:
            raise HTTPError(
                422,
                "invalid_branding",
                f"unknown color {key!r} (one of {', '.join(DEFAULT_COLORS)})",
            )
        if not isinstance(value, str) or not _COLOR.match(value):
            raise HTTPError(422, "invalid_branding", f"color {key!r} must be #rrggbb")
    record = await _console(request).operators.put_branding(
        principal.tenant_id,
        name=name.strip(),
        logo=logo,
        colors={k: v.lower() for k, v in colors.items()},
    )
    return JSONResponse(_branding_body(record))


# -- conversations ------------------------------------------------------------


async def list_conversations(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True)
    state = state_of(request)
    q = request.query_params
    limit = query_int(request, "limit", 50, 1, 200)
    active = q.get("active", "false").lower()
    if active not in ("true", "false", "1", "0"):
        raise HTTPError(400, "invalid_request", "active must be true or false")
    since = None
    if active in ("true", "1"):
        since = datetime.now(UTC) - timedelta(minutes=state.settings.console_active_minutes)
    found = await recent_conversations(state.store, principal.tenant_id, since=since, limit=limit)
    takeover = state.extensions.takeover

    async def live(conv_id: str) -> tuple[int, Any]:
        members, active_takeover = await asyncio.gather(
            state.hot.presence(f"conv:{conv_id}"), takeover.active(conv_id)
        )
        return len(members), active_takeover

    extras = await asyncio.gather(*(live(c.conversation.id) for c in found))
    data = []
    for item, (connected, active_takeover) in zip(found, extras, strict=True):
        conv = item.conversation
        data.append(
            {
                "id": conv.id,
                "object": "conversation",
                "persona": item.persona,
                "user": item.user,
                "channel": conv.channel,
                "created_at": conv.created_at.isoformat(),
                "updated_at": item.updated_at.isoformat(),
                "last_seq": conv.last_seq,
                "last_message": item.last_message,
                "connected": connected,
                "takeover": active_takeover,
            }
        )
    return JSONResponse({"data": data})


routes: list[BaseRoute] = [
    Route("/v1/console/login", login, methods=["POST"]),
    Route("/v1/console/me", me, methods=["GET"]),
    Route("/v1/operators", list_operators, methods=["GET"]),
    Route("/v1/operators", create_operator, methods=["POST"]),
    Route("/v1/operators/{operator_id}", update_operator, methods=["PATCH"]),
    Route("/v1/operators/{operator_id}", delete_operator, methods=["DELETE"]),
    Route("/v1/branding", get_branding, methods=["GET"]),
    Route("/v1/branding", put_branding, methods=["PUT"]),
    Route("/v1/conversations", list_conversations, methods=["GET"]),
]
