"""A fake YouTube Data API v3 on loopback, speaking its real JSON, for the YouTube tests.

Programmable state: videos (owned by channels), comment threads and replies
with their ``publishedAt``; OAuth access tokens (each one a channel), API
keys (read only) and refresh tokens for ``POST /token`` (Google's OAuth
token endpoint). Endpoints:

- ``GET /commentThreads``: ``part`` (``snippet``, ``replies``), exactly one
  of ``videoId`` / ``allThreadsRelatedToChannelId``, ``order`` (newest
  first), ``maxResults`` (1..100, default 20), ``pageToken`` /
  ``nextPageToken``, ``textFormat`` (``html`` by default, as the real API).
  ``textOriginal`` is only given to the comment's author, as the real API.
  A video with comments disabled answers 403 ``commentsDisabled``.
- ``GET /comments?parentId=``: a thread's replies, paginated.
- ``POST /comments?part=snippet``: a reply ``{"snippet": {"parentId",
  "textOriginal"}}``, recorded in ``inserted`` and visible afterwards.
- ``POST /token``: ``grant_type=refresh_token`` mints an access token.

Failures: :meth:`YouTubeServer.fail` queues error answers (403
``quotaExceeded`` or ``commentsDisabled``, 429, 500, 401...) in Google's
envelope; ``post_delay`` answers inserts late, after they are done (a
client timeout that still posted). Every request is kept in ``requests``;
``quota_used`` counts units as Google bills them (list 1, insert 50).
"""

from __future__ import annotations

import asyncio
import base64
import html
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer

OWNER = "UCowner0000000000000000"  # the connected channel of the tests
OWNER_TOKEN = "ya29.owner-token"
API_KEY = "AIza-test-key"

MESSAGES = {
    "quotaExceeded": (
        "youtube.quota",
        'The request cannot be completed because you have exceeded your <a href="/youtube/v3/getting-started#quota">quota</a>.',
    ),
    "rateLimitExceeded": ("usageLimits", "Too many requests."),
    "commentsDisabled": (
        "youtube.commentThread",
        "The video identified by the videoId parameter has disabled comments.",
    ),
    "forbidden": (
        "youtube.comment",
        "The comment could not be created due to insufficient permissions.",
    ),
    "authError": ("global", "Request had invalid authentication credentials."),
    "commentNotFound": ("youtube.comment", "The specified comment could not be found."),
    "videoNotFound": (
        "youtube.commentThread",
        "The video identified by the videoId parameter could not be found.",
    ),
    "backendError": ("global", "Backend Error"),
    "processingFailure": (
        "youtube.comment",
        "The API server failed to successfully process the request.",
    ),
}
STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def error_body(status: int, reason: str, message: str | None = None) -> dict[str, Any]:
    """Google's error envelope, as the Data API sends it."""
    domain, default = MESSAGES.get(reason, ("global", reason or "error"))
    text = message or default
    return {
        "error": {
            "code": status,
            "message": text,
            "errors": [{"message": text, "domain": domain, "reason": reason}],
            "status": STATUS.get(status, "UNKNOWN"),
        }
    }


def iso(when: datetime) -> str:
    """``publishedAt`` as the API writes it: UTC, whole seconds, ``Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Failure:
    """A programmed error answer (see :meth:`YouTubeServer.fail`)."""

    method: str
    path: str
    status: int
    reason: str
    times: int
    retry_after: str | None = None
    match: dict[str, str] = field(default_factory=dict)  # only requests with these params


@dataclass
class Thread:
    """A thread: its id is its top-level comment's, as on YouTube."""

    id: str
    video: str
    channel: str  # the video owner's channel
    seq: int
    replies: list[str] = field(default_factory=list)


class YouTubeServer(LoopbackServer):
    """The fake Data API; the tests program it through the attributes set in :meth:`reset`."""

    def __init__(self) -> None:
        self.reset()
        super().__init__(
            Starlette(
                routes=[
                    Route("/commentThreads", self._threads, methods=["GET"]),
                    Route("/comments", self._comments, methods=["GET", "POST"]),
                    Route("/token", self._token, methods=["POST"]),
                ]
            )
        )

    # -- programming it ---------------------------------------------------------

    def reset(self) -> None:
        """Forget everything (module-scoped server, fresh state per test)."""
        self.videos: dict[str, str] = {}  # video id -> owner channel
        self.threads: dict[str, Thread] = {}
        self.comments: dict[str, dict[str, Any]] = {}  # every comment resource by id
        self.tokens: dict[str, str] = {OWNER_TOKEN: OWNER}  # access token -> its channel
        self.api_keys: set[str] = {API_KEY}
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> channel
        self.disabled: set[str] = set()  # videos with comments disabled
        self.failures: list[Failure] = []
        self.requests: list[dict[str, Any]] = []
        self.inserted: list[dict[str, Any]] = []
        self.quota_used = 0
        self.daily_quota: int | None = None
        self.post_delay = 0.0
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        """The API base URL (what ``SALON_YOUTUBE_API_URL`` would be)."""
        return f"http://127.0.0.1:{self.port}"

    def add_video(self, video_id: str, channel: str = OWNER) -> str:
        """A video uploaded by ``channel``."""
        self.videos[video_id] = channel
        return video_id

    def add_comment(
        self,
        video_id: str,
        text: str,
        published: datetime,
        *,
        author: str = "UCviewer",
        name: str = "Viewer",
        comment_id: str | None = None,
    ) -> str:
        """A top-level comment (a new thread) on ``video_id``; its id."""
        channel = self.videos.setdefault(video_id, OWNER)
        cid = comment_id or f"Ugz{next(self._ids):06d}"
        self.comments[cid] = self._resource(cid, video_id, channel, text, published, author, name)
        self.threads[cid] = Thread(cid, video_id, channel, next(self._ids))
        return cid

    def add_reply(
        self,
        parent_id: str,
        text: str,
        published: datetime,
        *,
        author: str = "UCviewer",
        name: str = "Viewer",
    ) -> str:
        """A reply in the thread of the top-level comment ``parent_id``; its id."""
        thread = self.threads[parent_id]
        cid = f"{parent_id}.{next(self._ids):06d}"
        resource = self._resource(cid, thread.video, thread.channel, text, published, author, name)
        resource["snippet"]["parentId"] = parent_id
        self.comments[cid] = resource
        thread.replies.append(cid)
        return cid

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        reason: str = "",
        *,
        times: int = 1,
        retry_after: str | None = None,
        **match: str,
    ) -> None:
        """Answer the next ``times`` matching requests with this error (``match``: query params)."""
        self.failures.append(Failure(method, path, status, reason, times, retry_after, match))

    @staticmethod
    def page_token(offset: int) -> str:
        """The ``nextPageToken`` this fake gives for the page starting at ``offset``."""
        return base64.urlsafe_b64encode(str(offset).encode()).decode()

    def hits(self, method: str, path: str) -> list[dict[str, Any]]:
        """The recorded requests to ``method path``, in order."""
        return [r for r in self.requests if r["method"] == method and r["path"] == path]

    @staticmethod
    def _resource(
        cid: str, video: str, channel: str, text: str, published: datetime, author: str, name: str
    ) -> dict[str, Any]:
        return {
            "kind": "youtube#comment",
            "etag": f"etag-{cid}",
            "id": cid,
            "snippet": {
                "channelId": channel,
                "videoId": video,
                "textDisplay": text,
                "textOriginal": text,
                "authorDisplayName": name,
                "authorProfileImageUrl": f"https://yt3.ggpht.com/{author}",
                "authorChannelUrl": f"http://www.youtube.com/channel/{author}",
                "authorChannelId": {"value": author},
                "canRate": True,
                "viewerRating": "none",
                "likeCount": 0,
                "publishedAt": iso(published),
                "updatedAt": iso(published),
            },
        }

    # -- serving ------------------------------------------------------------------

    def _error(
        self, status: int, reason: str, message: str | None = None, retry_after: str | None = None
    ) -> Response:
        headers = {"Retry-After": retry_after} if retry_after else None
        return JSONResponse(error_body(status, reason, message), status, headers=headers)

    def _gate(
        self, request: Request, cost: int, *, write: bool
    ) -> tuple[str | None, Response | None]:
        """Programmed failures, auth, quota: (the caller's channel, or the refusal)."""
        for failure in self.failures:
            if (
                failure.times > 0
                and failure.method == request.method
                and failure.path == request.url.path
                and all(request.query_params.get(k) == v for k, v in failure.match.items())
            ):
                failure.times -= 1
                if failure.status != 403 or failure.reason != "quotaExceeded":
                    self.quota_used += cost  # refused calls are billed, quota refusals are not
                return None, self._error(
                    failure.status, failure.reason, retry_after=failure.retry_after
                )
        channel: str | None = None
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            channel = self.tokens.get(auth[7:])
            if channel is None:
                return None, self._error(401, "authError")
        elif not write and (
            request.headers.get("x-goog-api-key") in self.api_keys
            or request.query_params.get("key") in self.api_keys
        ):
            channel = None
        else:
            return None, self._error(401, "authError", "Login Required.")
        if self.daily_quota is not None and self.quota_used + cost > self.daily_quota:
            return None, self._error(403, "quotaExceeded")
        self.quota_used += cost
        return channel, None

    def _view(self, cid: str, viewer: str | None, text_format: str) -> dict[str, Any]:
        resource = self.comments[cid]
        snippet = dict(resource["snippet"])
        if text_format != "plainText":
            snippet["textDisplay"] = html.escape(snippet["textDisplay"]).replace("\n", "<br>")
        if viewer is None or snippet["authorChannelId"]["value"] != viewer:
            del snippet["textOriginal"]  # only the author is given the original text
        return {**resource, "snippet": snippet}

    @staticmethod
    def _page(
        items: list[Any], request: Request, default: int = 20
    ) -> tuple[list[Any], str | None, Response | None]:
        try:
            size = int(request.query_params.get("maxResults", str(default)))
            token = request.query_params.get("pageToken")
            offset = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        except ValueError:
            return (
                [],
                None,
                JSONResponse(
                    error_body(400, "invalidPageToken", "Invalid page token or maxResults."), 400
                ),
            )
        if not 1 <= size <= 100:
            return (
                [],
                None,
                JSONResponse(error_body(400, "invalidParameter", "maxResults out of range."), 400),
            )
        chunk = items[offset : offset + size]
        more = offset + size < len(items)
        next_token = YouTubeServer.page_token(offset + size) if more else None
        return chunk, next_token, None

    async def _record(self, request: Request) -> None:
        body = await request.body()
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.url.path,
            "params": dict(request.query_params),
            "headers": dict(request.headers),
            "body": body.decode(errors="replace"),
        }
        self.requests.append(entry)

    async def _threads(self, request: Request) -> Response:
        await self._record(request)
        viewer, refusal = self._gate(request, 1, write=False)
        if refusal is not None:
            return refusal
        q = request.query_params
        parts = set((q.get("part") or "").split(","))
        if not parts & {"id", "snippet", "replies"}:
            return self._error(
                400, "missingRequiredParameter", "No filter selected. Expected one of: part"
            )
        filters = [
            k for k in ("videoId", "allThreadsRelatedToChannelId", "id", "channelId") if q.get(k)
        ]
        if len(filters) != 1:
            return self._error(400, "incompatibleParameters", "Specify exactly one filter.")
        if q.get("videoId"):
            video = q["videoId"]
            if video not in self.videos:
                return self._error(404, "videoNotFound")
            if video in self.disabled:
                return self._error(403, "commentsDisabled")
            threads = [t for t in self.threads.values() if t.video == video]
        elif q.get("allThreadsRelatedToChannelId"):
            channel = q["allThreadsRelatedToChannelId"]
            threads = [
                t
                for t in self.threads.values()
                if t.channel == channel and t.video not in self.disabled
            ]
        else:
            return self._error(
                400,
                "unsupportedFilter",
                "this fake serves videoId and allThreadsRelatedToChannelId",
            )
        # order=time (the default): newest top-level comment first; the fake breaks
        # same-second ties by creation order, the real API in an unspecified way.
        threads.sort(
            key=lambda t: (self.comments[t.id]["snippet"]["publishedAt"], t.seq), reverse=True
        )
        chunk, next_token, bad = self._page(threads, request)
        if bad is not None:
            return bad
        text_format = q.get("textFormat", "html")
        items = []
        for t in chunk:
            item: dict[str, Any] = {
                "kind": "youtube#commentThread",
                "etag": f"etag-t-{t.id}",
                "id": t.id,
            }
            if "snippet" in parts:
                item["snippet"] = {
                    "channelId": t.channel,
                    "videoId": t.video,
                    "topLevelComment": self._view(t.id, viewer, text_format),
                    "canReply": True,
                    "totalReplyCount": len(t.replies),
                    "isPublic": True,
                }
            if "replies" in parts and t.replies:
                item["replies"] = {
                    "comments": [self._view(r, viewer, text_format) for r in t.replies]
                }
            items.append(item)
        body: dict[str, Any] = {
            "kind": "youtube#commentThreadListResponse",
            "etag": "etag-list",
            "pageInfo": {
                "totalResults": len(items),
                "resultsPerPage": int(q.get("maxResults", "20")),
            },
            "items": items,
        }
        if next_token:
            body["nextPageToken"] = next_token
        return JSONResponse(body)

    async def _comments(self, request: Request) -> Response:
        await self._record(request)
        if request.method == "GET":
            return await self._list_replies(request)
        channel, refusal = self._gate(request, 50, write=True)
        if refusal is not None:
            return refusal
        assert channel is not None
        if "snippet" not in (request.query_params.get("part") or ""):
            return self._error(400, "missingRequiredParameter", "Required parameter: part")
        try:
            snippet = (await request.json()).get("snippet") or {}
        except ValueError:
            return self._error(400, "parseError", "Parse Error")
        parent = snippet.get("parentId")
        text = str(snippet.get("textOriginal") or "")
        if not parent:
            return self._error(400, "parentIdMissing", "The comment must have a parentId.")
        if not text.strip():
            return self._error(400, "commentTextRequired", "The comment must have text.")
        if parent not in self.comments:
            return self._error(404, "commentNotFound")
        if parent not in self.threads:
            return self._error(
                400, "operationNotSupported", "Replies must answer a top-level comment."
            )
        thread = self.threads[parent]
        if thread.video in self.disabled:
            return self._error(403, "commentsDisabled")
        cid = self.add_reply(parent, text, datetime.now(UTC), author=channel, name="Owner")
        self.inserted.append(
            {"id": cid, "parentId": parent, "textOriginal": text, "channel": channel}
        )
        if self.post_delay:
            await asyncio.sleep(self.post_delay)  # done already: the answer is what is late
        return JSONResponse(self._view(cid, channel, "plainText"))

    async def _list_replies(self, request: Request) -> Response:
        viewer, refusal = self._gate(request, 1, write=False)
        if refusal is not None:
            return refusal
        parent = request.query_params.get("parentId")
        if not parent or parent not in self.threads:
            return self._error(404, "commentNotFound")
        chunk, next_token, bad = self._page(self.threads[parent].replies, request)
        if bad is not None:
            return bad
        text_format = request.query_params.get("textFormat", "html")
        body: dict[str, Any] = {
            "kind": "youtube#commentListResponse",
            "etag": "etag-comments",
            "pageInfo": {"totalResults": len(chunk), "resultsPerPage": len(chunk)},
            "items": [self._view(c, viewer, text_format) for c in chunk],
        }
        if next_token:
            body["nextPageToken"] = next_token
        return JSONResponse(body)

    async def _token(self, request: Request) -> Response:
        await self._record(request)
        form = await request.form()
        channel = self.refresh_tokens.get(str(form.get("refresh_token")))
        if form.get("grant_type") != "refresh_token" or channel is None:
            return JSONResponse(
                {
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked.",
                },
                400,
            )
        token = f"ya29.minted-{next(self._ids)}"
        self.tokens[token] = channel
        return JSONResponse(
            {
                "access_token": token,
                "expires_in": 3599,
                "scope": "https://www.googleapis.com/auth/youtube.force-ssl",
                "token_type": "Bearer",
            }
        )
