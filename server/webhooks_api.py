"""``/v1/webhooks/meta`` and ``/v1/webhooks/x``: platform deliveries of comments.

``GET`` answers the platform's verification (Meta's ``hub.challenge``, X's
CRC); ``POST`` reads the raw body (at most 1 MB), has the signature checked on
those exact bytes before anything is parsed, records the comments and
answers at once (processing runs in the background). A bad signature is 401
and nothing is processed. ``?app=<id>`` selects a tenant's own app
(``POST /v1/social/apps``); without it the deployment-wide app
(``SALON_META_APP_SECRET``, ``SALON_X_CONSUMER_SECRET``) signs.
docs/integrations.md.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from integrations.social.base import WebhookError
from server.http_util import HTTPError, read_limited, state_of

MAX_DELIVERY_BYTES = 1024 * 1024
RECEIVERS = ("meta", "x")


def _service(request: Request) -> Any:
    service = state_of(request).extensions.social
    name = request.path_params["platform"]
    if service is None or name not in RECEIVERS:
        raise HTTPError(404, "not_found", "no such webhook")
    return service


def _refusal(exc: WebhookError) -> Response:
    return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, exc.status)


async def challenge(request: Request) -> Response:
    service = _service(request)
    name = request.path_params["platform"]
    secrets = await service.secrets_for(name, request.query_params.get("app"))
    try:
        answer = service.platforms.receivers[name].challenge(request.query_params, secrets)
    except WebhookError as exc:
        return _refusal(exc)
    return Response(answer.body, media_type=answer.media_type)


async def deliver(request: Request) -> Response:
    service = _service(request)
    raw = await read_limited(request, MAX_DELIVERY_BYTES)
    try:
        counts = await service.receive(
            request.path_params["platform"], raw, request.headers, request.query_params.get("app")
        )
    except WebhookError as exc:
        return _refusal(exc)
    return JSONResponse({"ok": True, **counts})


routes = [
    Route("/v1/webhooks/{platform}", challenge, methods=["GET"]),
    Route("/v1/webhooks/{platform}", deliver, methods=["POST"]),
]
