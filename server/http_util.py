"""Small helpers for the HTTP handlers: errors, auth, JSON bodies."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from server.auth import Principal, authenticate, bearer_token
from server.state import AppState

MAX_JSON_BODY = 2 * 1024 * 1024


class HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="salon"'} if status == 401 else None
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.salon
    return state


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def require_principal(
    request: Request, *, api_key_only: bool = False, role: str | None = None
) -> Principal:
    """Who is calling, or 401; 403 when the credential cannot do this.

    Session tokens are limited by what each handler lets them see. Tenant
    credentials (API keys, console tokens) need ``role``: by default viewer
    to read (GET) and admin to change anything, so a handler that forgets to
    say fails closed; moderator actions name ``role="moderator"``.
    """
    state = state_of(request)
    credential = bearer_token(request.headers.get("authorization"))
    principal = await authenticate(state.store, state.tokens, credential, console=state.console)
    if principal is None:
        raise HTTPError(401, "unauthorized", "a valid API key or session token is required")
    if principal.is_session:
        if api_key_only:
            raise HTTPError(403, "forbidden", "this endpoint needs a tenant API key")
        return principal
    needed = role or ("viewer" if request.method in SAFE_METHODS else "admin")
    if not principal.allows(needed):
        raise HTTPError(403, "forbidden", f"this needs the {needed} role (yours: {principal.role})")
    return principal


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter in ``lo..hi``, or 400 ``invalid_request`` saying which."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise HTTPError(400, "invalid_request", f"{name} must be an integer") from exc
    if not lo <= value <= hi:
        raise HTTPError(400, "invalid_request", f"{name} must be in {lo}..{hi}")
    return value


async def json_body(request: Request, max_bytes: int = MAX_JSON_BODY) -> dict[str, Any]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HTTPError(413, "body_too_large", f"request body exceeds {max_bytes} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(400, "invalid_json", f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise HTTPError(400, "invalid_json", "request body must be a JSON object")
    return data


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole request body, or 413 ``file_too_large`` as soon as it passes ``limit``."""
    too_large = HTTPError(413, "file_too_large", f"the upload exceeds {limit} bytes")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def parse_multipart(
    request: Request, body: bytes, *, max_files: int = 1, max_part_size: int = 64 * 1024
) -> Any:
    """Parse a multipart body already read (so its size was bounded first).

    ``max_part_size`` bounds the non-file fields; files are bounded by the body.
    A malformed body is 400 ``invalid_request``.
    """
    from starlette.exceptions import HTTPException as StarletteHTTPException

    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    replay = Request(request.scope, receive)
    try:
        return await replay.form(max_files=max_files, max_fields=20, max_part_size=max_part_size)
    except AssertionError as exc:  # Starlette's way of saying python-multipart is missing
        raise HTTPError(
            501, "unavailable", "multipart uploads need python-multipart (a core dependency)"
        ) from exc
    except StarletteHTTPException as exc:  # what Starlette makes of a multipart parse error
        raise HTTPError(400, "invalid_request", f"malformed multipart body: {exc.detail}") from exc
    except ValueError as exc:
        raise HTTPError(400, "invalid_request", f"malformed multipart body: {exc}") from exc
