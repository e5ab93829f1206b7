"""A fake Meta Graph API on loopback, plus builders of signed Meta webhook deliveries.

Graph side (``base_url`` is ``http://127.0.0.1:<port>/v21.0``), speaking the
real wire format:

- ``POST /{ig-comment-id}/replies`` and ``POST /{comment-id}/comments`` with
  ``message`` (form, JSON or query string, as Graph accepts) answer
  ``{"id": ...}``;
- ``POST /me/messages`` (an Instagram private reply) with ``{"recipient":
  {"comment_id"}, "message": {"text"}}`` answers ``{"recipient_id",
  "message_id"}``.

The token is read from ``Authorization: Bearer`` (or ``OAuth``) or an
``access_token`` parameter; with ``tokens`` set, any other gets Graph's 400
``OAuthException`` code 190. A comment id in ``deleted`` gets the real 400
code 100 subcode 33 "does not exist". Every request is kept in ``calls``
(``path``, ``object_id``, ``edge``, ``token``, ``message``, ``comment_id``).
``fail_next(status, body, times=, headers=)`` queues failures answered
before anything else (:func:`graph_error` builds Graph's error body);
``delay_next(seconds)`` makes the next answer slow, for client timeouts.

Webhook side: :func:`signed_delivery` serializes a payload the way Meta does
(compact JSON, non-ASCII and ``/`` escaped) and signs the bytes with
``X-Hub-Signature-256`` (and the legacy SHA-1 ``X-Hub-Signature`` Meta also
sends). The payload builders follow Meta's documented samples: Instagram
``comments`` / ``live_comments`` changes and Page ``feed`` items.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer

GRAPH_VERSION = "v21.0"


def graph_error(
    code: int,
    message: str,
    *,
    type_: str = "OAuthException",
    subcode: int | None = None,
    is_transient: bool | None = None,
) -> dict[str, Any]:
    """Graph's error body: ``{"error": {"message", "type", "code", ..., "fbtrace_id"}}``."""
    error: dict[str, Any] = {"message": message, "type": type_, "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    if is_transient is not None:
        error["is_transient"] = is_transient
    error["fbtrace_id"] = "AbCdEfGhIjK"
    return {"error": error}


RATE_LIMITED = graph_error(
    4, "(#4) Application request limit reached", is_transient=True, type_="OAuthException"
)
TOKEN_EXPIRED = graph_error(190, "Error validating access token: Session has expired.", subcode=463)
PERMISSION_MISSING = graph_error(10, "(#10) Application does not have permission for this action")
SERVER_ERROR = graph_error(
    2, "An unexpected error has occurred. Please retry your request later.", is_transient=True
)


def _does_not_exist(object_id: str) -> dict[str, Any]:
    return graph_error(
        100,
        f"Unsupported post request. Object with ID '{object_id}' does not exist, cannot be "
        "loaded due to missing permissions, or does not support this operation.",
        type_="GraphMethodException",
        subcode=33,
    )


@dataclass
class _Failure:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class FakeGraph(LoopbackServer):
    """The Graph API's comment reply endpoints, recording calls, with programmable failures."""

    def __init__(self, tokens: set[str] | None = None) -> None:
        self.tokens = tokens
        self.deleted: set[str] = set()
        self.calls: list[dict[str, Any]] = []
        self._failures: list[_Failure] = []
        self._delay = 0.0
        self._ids = itertools.count(17_900_000_000_000_001)
        super().__init__(
            Starlette(
                routes=[
                    Route(f"/{GRAPH_VERSION}/me/messages", self._messages, methods=["POST"]),
                    Route(f"/{GRAPH_VERSION}/{{object_id}}/{{edge}}", self._edge, methods=["POST"]),
                ]
            )
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{GRAPH_VERSION}"

    def reset(self) -> None:
        """Forget calls, queued failures, delays and deleted comments."""
        self.calls.clear()
        self._failures.clear()
        self.deleted.clear()
        self._delay = 0.0

    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` and ``body`` (JSON, or text)."""
        self._failures.extend(_Failure(status, body, headers or {}) for _ in range(times))

    def delay_next(self, seconds: float) -> None:
        """Wait ``seconds`` before answering the next request."""
        self._delay = seconds

    async def _params(self, request: Request) -> tuple[dict[str, Any], str]:
        params: dict[str, Any] = dict(request.query_params)
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            body = json.loads(await request.body() or b"{}")
            if isinstance(body, dict):
                params.update(body)
        elif content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        return params, content_type

    def _token(self, request: Request, params: dict[str, Any]) -> str | None:
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("bearer", "oauth") and value:
            return value
        token = params.get("access_token")
        return token if isinstance(token, str) else None

    async def _before(self, request: Request, record: dict[str, Any]) -> Response | None:
        """Shared: record the call, then delay / queued failure / token check."""
        self.calls.append(record)
        if self._delay:
            delay, self._delay = self._delay, 0.0
            await asyncio.sleep(delay)
        if self._failures:
            failure = self._failures.pop(0)
            if isinstance(failure.body, dict | list):
                return JSONResponse(failure.body, failure.status, headers=failure.headers)
            return Response(failure.body or "", failure.status, headers=failure.headers)
        token = record["token"]
        if token is None:
            body = graph_error(2500, "An active access token must be used to query information.")
            return JSONResponse(body, 400)
        if self.tokens is not None and token not in self.tokens:
            # Graph answers OAuth errors with HTTP 400, not 401: the code tells.
            body = graph_error(190, "Invalid OAuth access token - Cannot parse access token")
            return JSONResponse(body, 400)
        return None

    async def _edge(self, request: Request) -> Response:
        object_id, edge = request.path_params["object_id"], request.path_params["edge"]
        params, content_type = await self._params(request)
        record = {
            "path": request.url.path.removeprefix(f"/{GRAPH_VERSION}"),
            "object_id": object_id,
            "edge": edge,
            "token": self._token(request, params),
            "message": params.get("message"),
            "content_type": content_type,
            "at": time.time(),
        }
        refused = await self._before(request, record)
        if refused is not None:
            return refused
        if edge not in ("replies", "comments"):
            return JSONResponse(graph_error(100, f"(#100) Unknown edge {edge}"), 400)
        if object_id in self.deleted:
            return JSONResponse(_does_not_exist(object_id), 400)
        if not record["message"]:
            return JSONResponse(graph_error(100, "(#100) The parameter message is required"), 400)
        n = next(self._ids)
        # Page comment ids are "<post>_<comment>"; Instagram ids are plain numbers.
        reply_id = f"{object_id.split('_')[0]}_{n}" if edge == "comments" else str(n)
        return JSONResponse({"id": reply_id})

    async def _messages(self, request: Request) -> Response:
        params, content_type = await self._params(request)
        recipient, message = params.get("recipient"), params.get("message")
        recipient = recipient if isinstance(recipient, dict) else {}
        message = message if isinstance(message, dict) else {}
        record = {
            "path": "/me/messages",
            "object_id": "me",
            "edge": "messages",
            "token": self._token(request, params),
            "message": message.get("text"),
            "comment_id": recipient.get("comment_id"),
            "content_type": content_type,
            "at": time.time(),
        }
        refused = await self._before(request, record)
        if refused is not None:
            return refused
        if not record["comment_id"] or not record["message"]:
            return JSONResponse(graph_error(100, "(#100) Invalid parameter"), 400)
        if record["comment_id"] in self.deleted:
            return JSONResponse(_does_not_exist(record["comment_id"]), 400)
        return JSONResponse(
            {
                "recipient_id": "1254459154682919",
                "message_id": f"aWdfZAG1faXRlbToxOk{next(self._ids)}",
            }
        )


# -- webhook deliveries ---------------------------------------------------------------


def meta_json(payload: Any) -> bytes:
    """``payload`` serialized as Meta sends it: compact, ``\\uXXXX`` escapes, ``\\/``.

    Meta signs these escaped bytes; a receiver that re-encodes the JSON (as
    UTF-8, or with other spacing) computes a different signature.
    """
    return (
        json.dumps(payload, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode()
    )


def sign(raw: bytes, app_secret: str) -> str:
    """The ``X-Hub-Signature-256`` value of ``raw``."""
    return "sha256=" + hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest()


def signed_delivery(payload: dict[str, Any], app_secret: str) -> tuple[bytes, dict[str, str]]:
    """The body and headers of Meta's POST for ``payload``, signed with ``app_secret``."""
    raw = meta_json(payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "facebookexternalua",
        "X-Hub-Signature": "sha1=" + hmac.new(app_secret.encode(), raw, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": sign(raw, app_secret),
    }
    return raw, headers


def challenge_query(
    verify_token: str, challenge: str = "1158201444", mode: str = "subscribe"
) -> dict[str, str]:
    """The query string of Meta's verification GET."""
    return {"hub.mode": mode, "hub.challenge": challenge, "hub.verify_token": verify_token}


def delivery(
    obj: str, account_id: str, *changes: dict[str, Any], sent: int | None = None
) -> dict[str, Any]:
    """``{"object", "entry": [{"id", "time", "changes"}]}`` with one entry."""
    entry = {"id": account_id, "time": sent or int(time.time()), "changes": list(changes)}
    return {"object": obj, "entry": [entry]}


def ig_comment(
    comment_id: str = "17865799348089039",
    text: str = "This is an example.",
    *,
    from_id: str = "232323232",
    username: str = "test",
    media_id: str = "123123123",
    media_product_type: str = "FEED",
    parent_id: str | None = None,
    field: str = "comments",
) -> dict[str, Any]:
    """An Instagram ``comments`` change (Meta's sample; ``parent_id`` for a reply)."""
    value: dict[str, Any] = {
        "from": {"id": from_id, "username": username},
        "media": {"id": media_id, "media_product_type": media_product_type},
        "id": comment_id,
        "text": text,
    }
    if parent_id is not None:
        value["parent_id"] = parent_id
    return {"field": field, "value": value}


def ig_live_comment(
    comment_id: str = "17865799348089040", text: str = "hello from the live", **kw: Any
) -> dict[str, Any]:
    """An Instagram ``live_comments`` change: a comment on a live broadcast."""
    kw.setdefault("media_product_type", "LIVE")
    return ig_comment(comment_id, text, field="live_comments", **kw)


def page_comment(
    comment_id: str = "44444444_444444444",
    message: str = "Nice post!",
    *,
    post_id: str = "44444444_111111111",
    parent_id: str | None = None,
    from_id: str = "1234567890321",
    from_name: str = "Test Page Fan",
    verb: str = "add",
    created_time: int = 1_720_000_000,
) -> dict[str, Any]:
    """A Page ``feed`` change for a comment (``parent_id`` defaults to the post, as Meta sends)."""
    return {
        "field": "feed",
        "value": {
            "from": {"id": from_id, "name": from_name},
            "post": {
                "status_type": "added_photos",
                "is_published": True,
                "updated_time": "2024-07-03T09:46:40+0000",
                "permalink_url": "https://www.facebook.com/44444444/posts/111111111",
                "promotion_status": "inactive",
                "id": post_id,
            },
            "message": message,
            "post_id": post_id,
            "comment_id": comment_id,
            "created_time": created_time,
            "item": "comment",
            "parent_id": parent_id or post_id,
            "verb": verb,
        },
    }


def page_post(post_id: str = "44444444_222222222", message: str = "Our new post") -> dict[str, Any]:
    """A Page ``feed`` change for a new status post (not a comment)."""
    return {
        "field": "feed",
        "value": {
            "from": {"id": "44444444", "name": "Test Page"},
            "message": message,
            "post_id": post_id,
            "created_time": 1_720_000_000,
            "item": "status",
            "published": 1,
            "verb": "add",
        },
    }
