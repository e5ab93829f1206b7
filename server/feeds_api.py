"""``/v1/feeds``: the feeds personas follow, their status, refresh, and trending topics.

All endpoints need a tenant API key (feeds are tenant configuration, not
something a person's session token manages) and see that tenant's feeds
only. The service is ``AppState.extensions.feeds`` (integrations/rss); when
feeds are disabled (``SALON_FEEDS_ENABLED=false``) every endpoint answers 404
``feeds_disabled``. docs/feeds.md describes the fields.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from integrations.rss.fetch import FetchError, check_url
from memory.feeds_store import FeedConflict, FeedRecord
from server.auth import Principal
from server.http_util import HTTPError, json_body, query_int, require_principal, state_of

MAX_FEEDS_LISTED = 1000


def _service(request: Request) -> Any:
    service = state_of(request).extensions.feeds
    if service is None:
        raise HTTPError(404, "feeds_disabled", "feeds are disabled (SALON_FEEDS_ENABLED)")
    return service


async def _persona_id(request: Request, principal: Principal, persona: Any) -> str:
    if not isinstance(persona, str) or not persona:
        raise HTTPError(400, "invalid_request", "'persona' must be a persona id or slug")
    record = await state_of(request).store.get_persona(principal.tenant_id, persona)
    if record is None:
        raise HTTPError(404, "unknown_persona", f"no persona {persona!r}")
    return str(record.id)


async def _feed(request: Request, principal: Principal) -> FeedRecord:
    feed_id = request.path_params["feed_id"]
    record: FeedRecord | None = await _service(request).store.get_feed(principal.tenant_id, feed_id)
    if record is None:
        raise HTTPError(404, "feed_not_found", f"no feed {feed_id!r}")
    return record


async def create_feed(request: Request) -> Response:
    """``{persona, url, interval_seconds?, title?}`` -> the feed (201); first fetch is due now."""
    principal = await require_principal(request, api_key_only=True)
    service = _service(request)
    body = await json_body(request)
    unknown = set(body) - {"persona", "url", "interval_seconds", "title"}
    if unknown:
        raise HTTPError(422, "invalid_feed", f"unknown fields: {', '.join(sorted(unknown))}")
    persona_id = await _persona_id(request, principal, body.get("persona"))
    try:
        url = check_url(body.get("url", ""), allow_private=service.settings.allow_private)
    except FetchError as exc:
        raise HTTPError(422, "invalid_feed_url", str(exc)) from exc
    settings = service.settings
    interval = body.get("interval_seconds", settings.interval_seconds)
    if not isinstance(interval, int) or isinstance(interval, bool):
        raise HTTPError(422, "invalid_feed", "'interval_seconds' must be an integer")
    if interval < settings.min_interval_seconds:
        raise HTTPError(
            422,
            "invalid_feed",
            f"'interval_seconds' must be at least {settings.min_interval_seconds}",
        )
    title = body.get("title")
    if title is not None and not isinstance(title, str):
        raise HTTPError(422, "invalid_feed", "'title' must be a string")
    try:
        record = await service.store.create_feed(
            principal.tenant_id,
            persona_id=persona_id,
            url=url,
            interval_seconds=interval,
            title=title[:500] if title else None,
        )
    except FeedConflict as exc:
        raise HTTPError(409, "feed_exists", str(exc)) from exc
    return JSONResponse(record.to_public(), 201)


async def list_feeds(request: Request) -> Response:
    """``?persona=`` (id or slug) narrows the list to one persona."""
    principal = await require_principal(request, api_key_only=True)
    service = _service(request)
    persona = request.query_params.get("persona")
    persona_id = await _persona_id(request, principal, persona) if persona is not None else None
    records = await service.store.list_feeds(principal.tenant_id, persona_id=persona_id)
    return JSONResponse({"data": [r.to_public() for r in records[:MAX_FEEDS_LISTED]]})


async def get_feed(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True)
    return JSONResponse((await _feed(request, principal)).to_public())


async def delete_feed(request: Request) -> Response:
    principal = await require_principal(request, api_key_only=True)
    record = await _feed(request, principal)
    await _service(request).store.delete_feed(principal.tenant_id, record.id)
    return Response(status_code=204)


async def refresh_feed(request: Request) -> Response:
    """Fetch now, whatever the schedule; 409 ``feed_busy`` while another fetch holds it.

    A feed that is down or returns garbage is not an HTTP error here: the
    answer is 200 with ``status: "error"`` and the feed's updated status.
    """
    principal = await require_principal(request, api_key_only=True)
    record = await _feed(request, principal)
    outcome = await _service(request).refresh(record, force=True)
    if outcome.status == "busy":
        raise HTTPError(409, "feed_busy", "this feed is being fetched right now; try again")
    return JSONResponse(outcome.to_public())


async def feed_items(request: Request) -> Response:
    """The feed's stored items, newest first, with keyphrases and sentiment (``?limit=``)."""
    principal = await require_principal(request, api_key_only=True)
    record = await _feed(request, principal)
    limit = query_int(request, "limit", 50, 1, 500)
    items = await _service(request).store.list_items(principal.tenant_id, record.id, limit=limit)
    return JSONResponse({"data": [i.to_public() for i in items]})


async def topics(request: Request) -> Response:
    """``?persona=`` (required): the persona's trending topics now, best first (``?limit=``)."""
    principal = await require_principal(request, api_key_only=True)
    service = _service(request)
    persona = request.query_params.get("persona")
    if persona is None:
        raise HTTPError(400, "invalid_request", "'persona' is required")
    persona_id = await _persona_id(request, principal, persona)
    limit = query_int(request, "limit", 10, 1, 50)
    found = await service.topics(principal.tenant_id, persona_id, limit=limit)
    settings = service.settings
    return JSONResponse(
        {
            "persona": persona_id,
            "window_hours": settings.window_hours,
            "baseline_windows": settings.baseline_windows,
            "data": [t.to_public() for t in found],
        }
    )


routes = [
    Route("/v1/feeds", list_feeds, methods=["GET"]),
    Route("/v1/feeds", create_feed, methods=["POST"]),
    # Before /v1/feeds/{feed_id}: "topics" is not a feed id.
    Route("/v1/feeds/topics", topics, methods=["GET"]),
    Route("/v1/feeds/{feed_id}", get_feed, methods=["GET"]),
    Route("/v1/feeds/{feed_id}", delete_feed, methods=["DELETE"]),
    Route("/v1/feeds/{feed_id}/refresh", refresh_feed, methods=["POST"]),
    Route("/v1/feeds/{feed_id}/items", feed_items, methods=["GET"]),
]
