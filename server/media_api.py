"""``/v1/media``: request images, videos and avatars, follow them, fetch their files.

- ``POST /v1/media`` ``{kind, prompt, persona, user?, conversation_id?, options?}``
  -> 202 with the item (``queued``); progress also reaches the conversation's
  socket as ``media.progress`` / ``media.done`` when a conversation is named.
- ``GET /v1/media`` (``?persona=&user=&kind=&state=&limit=``), ``GET
  /v1/media/{id}`` (with a fresh signed ``url`` once done), ``POST
  /v1/media/{id}/cancel``, ``DELETE /v1/media/{id}``.
- ``GET /v1/media/files/{tenant}/{id}?exp=&sig=``: the file, for anyone
  holding a valid signed URL (an ``<img>`` or a video player sends no
  credentials); byte ranges for players that seek.
- ``GET/PUT /v1/media/quota``: bytes used and the tenant's quota.
- ``POST /v1/personas/{id}/avatar`` (a GLB/VRM upload, or ``{"url"}``) and
  ``GET /v1/personas/{id}/avatar``: the persona's 3D avatar.

A session token acts for its own user only (and its persona, when bound);
another tenant's item is indistinguishable from a missing one. docs/media.md.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agents.media import MediaError, MediaService
from media.signed_urls import verify
from memory.media_store import STATES, MediaRecord
from server.auth import Principal
from server.http_util import (
    HTTPError,
    json_body,
    parse_multipart,
    read_limited,
    require_principal,
    state_of,
)

ERROR_STATUS = {
    "invalid_request": 400,
    "unknown_persona": 404,
    "media_not_found": 404,
    "quota_exceeded": 413,
    "moderation_blocked": 400,
    "moderation_unavailable": 503,
    "jobs_unavailable": 503,
    "generator_unavailable": 503,
}
MAX_LIST = 200
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def media_service(request: Request) -> MediaService:
    service: MediaService | None = state_of(request).extensions.media
    if service is None:
        raise HTTPError(404, "media_disabled", "media generation is not enabled")
    return service


def _raise(exc: MediaError) -> None:
    raise HTTPError(ERROR_STATUS.get(exc.code, 400), exc.code, exc.message) from exc


async def _admit(request: Request, service: MediaService, principal: Principal) -> None:
    key = f"media-rate:{principal.tenant_id}"
    limit = service.config.media_requests_per_minute
    if not await state_of(request).hot.hit(key, limit, 60):
        raise HTTPError(429, "rate_limited", "too many media requests; try again later")


async def _persona_id(request: Request, principal: Principal, persona: Any) -> str:
    if principal.is_session and principal.persona is not None:
        persona = persona or principal.persona
        if persona != principal.persona:
            raise HTTPError(403, "forbidden", "this session token is bound to another persona")
    if not isinstance(persona, str) or not persona:
        raise HTTPError(400, "invalid_request", "'persona' must be a persona id or slug")
    record = await state_of(request).store.get_persona(principal.tenant_id, persona)
    if record is None or (
        principal.is_session
        and principal.persona is not None
        and principal.persona not in (record.id, record.slug)
    ):
        raise HTTPError(404, "unknown_persona", f"no persona {persona!r}")
    return str(record.id)


async def _user_id(request: Request, principal: Principal, user: Any) -> str | None:
    """The internal id of the person the media is for (a session: always its own user)."""
    store = state_of(request).store
    if principal.is_session:
        assert principal.user_id is not None
        record = await store.get_or_create_user(
            principal.tenant_id, principal.user_id, principal.user_name or principal.user_id
        )
        return str(record.id)
    if user is None:
        return None
    if not isinstance(user, str) or not user or len(user) > 200:
        raise HTTPError(400, "invalid_request", "'user' must be the person's external id")
    return str((await store.get_or_create_user(principal.tenant_id, user, user)).id)


async def _conversation_id(
    request: Request, principal: Principal, cid: Any, persona_id: str, user_id: str | None
) -> str | None:
    if cid is None:
        return None
    if not isinstance(cid, str):
        raise HTTPError(400, "invalid_request", "'conversation_id' must be a string")
    conv = await state_of(request).store.get_conversation(principal.tenant_id, cid)
    if conv is None or conv.persona_id != persona_id or (user_id and conv.user_id != user_id):
        raise HTTPError(404, "conversation_not_found", f"no conversation {cid!r} of this persona")
    return str(conv.id)


async def _visible(request: Request, principal: Principal) -> MediaRecord:
    record = await media_service(request).media.get(
        principal.tenant_id, request.path_params["media_id"]
    )
    if record is not None and principal.is_session:
        own = await _user_id(request, principal, None)
        if record.user_id != own:
            record = None
    if record is None:
        raise HTTPError(404, "media_not_found", f"no media {request.path_params['media_id']!r}")
    return record


async def create_media(request: Request) -> Response:
    principal = await require_principal(request)
    service = media_service(request)
    body = await json_body(request)
    unknown = set(body) - {"kind", "prompt", "persona", "user", "conversation_id", "options"}
    if unknown:
        raise HTTPError(400, "invalid_request", f"unknown fields: {', '.join(sorted(unknown))}")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise HTTPError(400, "invalid_request", "'options' must be an object")
    await _admit(request, service, principal)
    persona_id = await _persona_id(request, principal, body.get("persona"))
    user_id = await _user_id(request, principal, body.get("user"))
    cid = await _conversation_id(
        request, principal, body.get("conversation_id"), persona_id, user_id
    )
    try:
        record, _ = await service.request(
            principal.tenant_id,
            kind=body.get("kind"),
            prompt=body.get("prompt"),
            persona_id=persona_id,
            user_id=user_id,
            conversation_id=cid,
            options=parse_options(options),
            requested_by=principal.kind,
        )
    except MediaError as exc:
        _raise(exc)
        raise
    url = f"/v1/media/{record.id}"
    return JSONResponse(service.public(record), 202, headers={"Location": url})


def parse_options(options: dict[str, Any]) -> dict[str, Any]:
    """Known generation options, type-checked (the rest is refused)."""
    ints = {"width": (64, 2048), "height": (64, 2048), "steps": (1, 200), "fps": (1, 60)}
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in ints:
            low, high = ints[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise HTTPError(400, "invalid_request", f"options.{key} must be {low}..{high}")
            out[key] = value
        elif key == "seconds":
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not 0.5 <= value <= 30
            ):
                raise HTTPError(400, "invalid_request", "options.seconds must be 0.5..30")
            out[key] = float(value)
        elif key == "fade_in":
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 5:
                raise HTTPError(400, "invalid_request", "options.fade_in must be 0..5 seconds")
            out[key] = float(value)
        elif key == "seed":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32:
                raise HTTPError(400, "invalid_request", "options.seed must be 0..2^32-1")
            out[key] = value
        elif key == "negative_prompt":
            if not isinstance(value, str) or len(value) > 1000:
                raise HTTPError(400, "invalid_request", "options.negative_prompt: a short string")
            out[key] = value
        elif key == "animations":
            if not isinstance(value, list) or not all(v in ("idle", "talk") for v in value):
                raise HTTPError(400, "invalid_request", "options.animations: 'idle', 'talk'")
            out[key] = list(value)
        else:
            raise HTTPError(400, "invalid_request", f"unknown option {key!r}")
    return out


async def list_media(request: Request) -> Response:
    principal = await require_principal(request)
    service = media_service(request)
    q = request.query_params
    state = q.get("state")
    if state is not None and state not in STATES:
        raise HTTPError(400, "invalid_request", f"'state' must be one of {', '.join(STATES)}")
    try:
        limit = min(MAX_LIST, max(1, int(q.get("limit", "50"))))
    except ValueError as exc:
        raise HTTPError(400, "invalid_request", "'limit' must be a number") from exc
    persona_id = await _persona_id(request, principal, q["persona"]) if "persona" in q else None
    user_id = await _user_id(request, principal, q.get("user"))
    items = await service.media.list_items(
        principal.tenant_id,
        persona_id=persona_id,
        user_id=user_id,
        kind=q.get("kind"),
        states=[state] if state else None,
        limit=limit,
    )
    return JSONResponse({"object": "list", "data": [service.public(i) for i in items]})


async def get_media(request: Request) -> Response:
    principal = await require_principal(request)
    record = await _visible(request, principal)
    return JSONResponse(media_service(request).public(record))


async def cancel_media(request: Request) -> Response:
    principal = await require_principal(request)
    record = await _visible(request, principal)
    service = media_service(request)
    updated = await service.cancel(principal.tenant_id, record.id)
    return JSONResponse(service.public(updated or record))


async def delete_media(request: Request) -> Response:
    principal = await require_principal(request)
    record = await _visible(request, principal)
    await media_service(request).delete(principal.tenant_id, record.id)
    return JSONResponse({"id": record.id, "deleted": True})


async def media_file(request: Request) -> Response:
    """The file behind a signed URL; the signature is the only credential."""
    service = media_service(request)
    tenant_id = request.path_params["tenant_id"]
    media_id = request.path_params["media_id"]
    path = f"/v1/media/files/{tenant_id}/{media_id}"
    q = request.query_params
    if not verify(path, q.get("exp"), q.get("sig"), service.secret):
        raise HTTPError(403, "invalid_signature", "the media URL is invalid or has expired")
    record = await service.media.get(tenant_id, media_id)
    if record is None or record.state != "done" or record.storage_key is None:
        raise HTTPError(404, "media_not_found", "this media is no longer available")
    stored = await service.storage.open(record.storage_key)
    if stored is None:
        raise HTTPError(410, "media_gone", "the media file is no longer stored")
    data, mime = stored
    headers = {
        "Cache-Control": "private, max-age=300",
        "X-Content-Type-Options": "nosniff",
        "Accept-Ranges": "bytes",
        "Content-Disposition": "inline",
    }
    wanted = request.headers.get("range")
    if wanted:
        return _ranged(data, mime, wanted, headers)
    return Response(data, media_type=mime, headers=headers)


def _ranged(data: bytes, mime: str, wanted: str, headers: dict[str, str]) -> Response:
    """One byte range (what video players ask for); anything else gets 416."""
    match = _RANGE.match(wanted.strip())
    size = len(data)
    if match is None or (not match.group(1) and not match.group(2)):
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
    if match.group(1):
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else size - 1
    else:  # a suffix: the last N bytes
        start, end = max(0, size - int(match.group(2))), size - 1
    end = min(end, size - 1)
    if start > end or start >= size:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
    headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
    return Response(data[start : end + 1], status_code=206, media_type=mime, headers=headers)


async def get_quota(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True)
    return JSONResponse(await media_service(request).quota(principal.tenant_id))


async def put_quota(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True)
    service = media_service(request)
    body = await json_body(request)
    value = body.get("quota_bytes")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise HTTPError(400, "invalid_request", "'quota_bytes' must be a byte count or null")
    await service.media.set_quota(principal.tenant_id, value)
    return JSONResponse(await service.quota(principal.tenant_id))


async def put_persona_avatar(request: Request) -> Response:
    """Import a GLB/VRM as the persona's avatar: a multipart ``file``, or JSON ``{"url"}``."""
    principal = await require_principal(request, api_key_only=True)
    service = media_service(request)
    persona_id = await _persona_id(request, principal, request.path_params["persona_id"])
    limit = service.config.avatar_import_max_bytes
    url: str | None = None
    filename: str | None = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await parse_multipart(request, await read_limited(request, limit + 64 * 1024))
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise HTTPError(400, "invalid_request", "a 'file' part (GLB or VRM) is needed")
            data = await upload.read()
            filename = upload.filename
        finally:
            await form.close()
    else:
        body = await json_body(request)
        url = body.get("url")
        data = await _fetch_avatar(service, url)
    try:
        record = await service.import_avatar(
            principal.tenant_id,
            persona_id,
            data,
            source_url=url,
            filename=filename,
            requested_by=principal.kind,
        )
    except MediaError as exc:
        _raise(exc)
        raise
    return JSONResponse(service.public(record), 201)


async def _fetch_avatar(service: MediaService, url: Any) -> bytes:
    """Download an avatar with the project's SSRF guard (no private addresses, capped size)."""
    from integrations.rss.fetch import Fetcher, FetchError

    if not isinstance(url, str) or not url:
        raise HTTPError(400, "invalid_request", "give a multipart 'file' or JSON {\"url\": ...}")
    fetcher = Fetcher(
        allow_private=service.config.avatar_import_allow_private,
        timeout_seconds=30.0,
        max_bytes=service.config.avatar_import_max_bytes,
        max_redirects=3,
        user_agent="Salon avatar import",
    )
    try:
        result = await fetcher.fetch(url)
    except FetchError as exc:
        raise HTTPError(400, "fetch_failed", f"the avatar could not be fetched: {exc}") from exc
    finally:
        await fetcher.close()
    return result.body or b""


async def get_persona_avatar(request: Request) -> Response:
    principal = await require_principal(request)
    service = media_service(request)
    persona_id = await _persona_id(request, principal, request.path_params["persona_id"])
    record = await service.persona_avatar(principal.tenant_id, persona_id)
    if record is None:
        raise HTTPError(404, "no_avatar", "this persona has no avatar yet")
    return JSONResponse(service.public(record))


routes = [
    Route("/v1/media", create_media, methods=["POST"]),
    Route("/v1/media", list_media, methods=["GET"]),
    Route("/v1/media/quota", get_quota, methods=["GET"]),
    Route("/v1/media/quota", put_quota, methods=["PUT"]),
    Route("/v1/media/files/{tenant_id}/{media_id}", media_file, methods=["GET"]),
    Route("/v1/media/{media_id}", get_media, methods=["GET"]),
    Route("/v1/media/{media_id}", delete_media, methods=["DELETE"]),
    Route("/v1/media/{media_id}/cancel", cancel_media, methods=["POST"]),
    Route("/v1/personas/{persona_id}/avatar", put_persona_avatar, methods=["POST"]),
    Route("/v1/personas/{persona_id}/avatar", get_persona_avatar, methods=["GET"]),
]
