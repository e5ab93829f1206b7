"""YouTube comments: polled with the Data API v3, answered with ``comments.insert``.

YouTube has no comment webhook, so :class:`YouTubePoller` asks
``commentThreads.list`` (1 quota unit a call) for the connected channel's
threads, or for chosen videos, newest first, and keeps a cursor per source;
:class:`YouTubeReplyClient` posts replies with ``comments.insert`` (50
units). docs/integrations-youtube.md has the operator's view: credentials,
quota arithmetic, first-poll behaviour and error mapping.

Credentials (a mapping of plain values): ``access_token`` (OAuth, scope
``youtube.force-ssl``; needed to reply), or ``refresh_token`` with
``client_id`` and ``client_secret`` (access tokens are then minted and
renewed here, in memory), or ``api_key`` (public comments, read only);
optionally ``video_ids`` (a list or a comma-separated string) to watch only
those videos instead of everything on the channel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, time, timedelta
from time import monotonic
from typing import Any, TypedDict, Unpack
from zoneinfo import ZoneInfo

import httpx
import structlog

from integrations.social.base import (
    CommentPoller,
    InboundComment,
    PollResult,
    ReplyClient,
    ReplyError,
    ReplyResult,
)
from integrations.social.settings import SocialSettings

log = structlog.get_logger(__name__)

API_URL = "https://www.googleapis.com/youtube/v3"
TOKEN_URL = "https://oauth2.googleapis.com/token"
LIST_COST = 1  # commentThreads.list, comments.list
INSERT_COST = 50  # comments.insert
QUOTA_REASONS = frozenset({"quotaExceeded", "dailyLimitExceeded"})
RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
MAX_SEEN = 2000  # ids remembered per source (see _merge_seen)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- the quota day ---------------------------------------------------------------------


def seconds_until_quota_reset(now: datetime, *, slack_seconds: float = 300.0) -> float:
    """Seconds from ``now`` until YouTube's daily quota is reset (midnight Pacific), plus slack.

    The slack absorbs clock skew between this server and Google's: asking a
    few seconds *before* their midnight would be refused again and cost a
    whole extra day. A ``now`` inside the slack after midnight waits only for
    the rest of the slack.
    """
    pacific = ZoneInfo("America/Los_Angeles")  # DST-aware: 08:00 UTC in winter, 07:00 in summer
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    today = now.astimezone(pacific).date()
    for day in (today, today + timedelta(days=1)):
        target = datetime.combine(day, time(0), pacific) + timedelta(seconds=slack_seconds)
        if target > now:
            return (target - now).total_seconds()
    raise AssertionError("unreachable: tomorrow's midnight is always ahead")


# -- HTTP, auth and errors shared by the poller and the reply client --------------------


class YouTubeAPIError(Exception):
    """A call that failed: an error response, or no response at all.

    ``status`` is 0 when nothing came back (``reason`` ``connection``: not
    sent; ``timeout`` or ``no_answer``: sent, unanswered); else ``reason``
    is the first ``error.errors[].reason``. ``maybe_sent``: the request may
    have reached YouTube and been carried out (a 5xx, or no answer).
    """

    def __init__(
        self, status: int, reason: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message
        self.retry_after = retry_after
        self.maybe_sent = status >= 500 or reason in ("timeout", "no_answer")

    @property
    def quota(self) -> bool:
        """The daily quota is spent: nothing helps before it resets."""
        return self.reason in QUOTA_REASONS

    @property
    def transient(self) -> bool:
        """Worth asking again soon (rate limits, outages, network trouble)."""
        return (
            self.status in (0, 429) or self.status >= 500 or self.reason in RATE_REASONS
        ) and not self.quota


def _error_from(response: httpx.Response) -> YouTubeAPIError:
    """Google's error envelope: ``{"error": {"code", "message", "errors": [{"reason"}]}}``."""
    reason, message = "", response.text[:300]
    try:
        error = response.json().get("error") or {}
        message = str(error.get("message") or message)
        reasons = error.get("errors") or [{}]
        reason = str(reasons[0].get("reason") or error.get("status") or "")
    except (ValueError, AttributeError, IndexError):
        pass  # a proxy's HTML error page: the status alone decides
    retry_after: float | None = None
    header = response.headers.get("retry-after", "")
    if header.strip().isdigit():
        retry_after = float(header)
    return YouTubeAPIError(response.status_code, reason, message, retry_after=retry_after)


def _refreshable(credentials: Mapping[str, Any]) -> bool:
    return all(credentials.get(k) for k in ("refresh_token", "client_id", "client_secret"))


class ClientOptions(TypedDict, total=False):
    """What both YouTube clients take besides ``api_url`` (see ``_YouTubeAPI``)."""

    timeout: float  # seconds per request
    token_url: str  # Google's OAuth token endpoint, for refresh tokens
    backoff_seconds: float  # the base wait after a rate limit or an outage
    quota_reset_slack_seconds: float  # margin after midnight Pacific (clock skew)
    clock: Callable[[], datetime]  # now, for the quota day (tests inject one)
    transport: httpx.AsyncBaseTransport  # httpx transport (tests, proxies)


class _YouTubeAPI:
    """One lazily created httpx client, OAuth token refresh, and the error envelope."""

    def __init__(
        self,
        api_url: str = API_URL,
        *,
        timeout: float = 20.0,
        token_url: str = TOKEN_URL,
        backoff_seconds: float = 30.0,
        quota_reset_slack_seconds: float = 300.0,
        clock: Callable[[], datetime] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._transport = transport
        self.token_url = token_url
        self.timeout = timeout
        self.backoff_seconds = backoff_seconds
        self.quota_reset_slack_seconds = quota_reset_slack_seconds
        self.clock = clock or (lambda: datetime.now(UTC))
        self._client: httpx.AsyncClient | None = None
        # Minted access tokens by a hash of their refresh token: (token, monotonic expiry).
        self._tokens: dict[str, tuple[str, float]] = {}

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout), transport=self._transport
            )
        return self._client

    async def close(self) -> None:
        """Release the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def quota_retry_after(self) -> float:
        """Seconds until the quota day turns over (with the skew margin)."""
        return seconds_until_quota_reset(self.clock(), slack_seconds=self.quota_reset_slack_seconds)

    async def _access_token(self, credentials: Mapping[str, Any], *, renew: bool) -> str | None:
        if not _refreshable(credentials):
            token = credentials.get("access_token")
            return str(token) if token else None
        key = hashlib.sha256(str(credentials["refresh_token"]).encode()).hexdigest()
        cached = self._tokens.get(key)
        if cached and not renew and cached[1] > monotonic():
            return cached[0]
        if not renew and not cached and credentials.get("access_token"):
            return str(credentials["access_token"])  # a stored one may still be good
        form = {k: str(credentials[k]) for k in ("refresh_token", "client_id", "client_secret")}
        try:
            response = await self._http().post(
                self.token_url, data={"grant_type": "refresh_token", **form}
            )
        except httpx.HTTPError as exc:
            raise YouTubeAPIError(0, "connection", f"token refresh: {exc!r}") from exc
        if response.status_code >= 500:
            raise _error_from(response)
        try:
            body = response.json() if response.status_code == 200 else {}
        except ValueError:
            body = {}
        if not body.get("access_token"):
            # invalid_grant: the refresh token was revoked or expired; the owner reconnects.
            raise YouTubeAPIError(401, "invalid_grant", f"token refresh: {response.text[:200]}")
        # Renew a minute early so that a token never expires in flight.
        ttl = max(60.0, float(body.get("expires_in") or 3600) - 60.0)
        self._tokens[key] = (str(body["access_token"]), monotonic() + ttl)
        return str(body["access_token"])

    async def _call(
        self,
        method: str,
        path: str,
        credentials: Mapping[str, Any],
        *,
        params: dict[str, str],
        json: dict[str, Any] | None = None,
        write: bool = False,
    ) -> dict[str, Any]:
        """One API call; the JSON body on 2xx, else :class:`YouTubeAPIError`.

        A 401 with refreshable credentials mints a new access token and tries
        once more (a 401 means nothing was done, so this cannot duplicate).
        """
        renew = False
        for _ in range(2):
            token = await self._access_token(credentials, renew=renew)
            headers: dict[str, str] = {}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            elif credentials.get("api_key") and not write:
                # Google's header form of ?key=: the key stays out of URLs and access logs.
                headers["X-Goog-Api-Key"] = str(credentials["api_key"])
            else:
                need = "an OAuth access token" if write else "an access token or an API key"
                raise YouTubeAPIError(401, "noCredentials", f"the account has no {need}")
            try:
                response = await self._http().request(
                    method, f"{self.api_url}{path}", params=params, json=json, headers=headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise YouTubeAPIError(0, "connection", repr(exc)) from exc
            except httpx.TimeoutException as exc:
                # Sent, then no answer in time: YouTube may have done it (YouTubeReplyClient).
                raise YouTubeAPIError(0, "timeout", repr(exc)) from exc
            except httpx.HTTPError as exc:  # the connection dropped mid-way: same doubt
                raise YouTubeAPIError(0, "no_answer", repr(exc)) from exc
            if response.status_code == 401 and _refreshable(credentials) and not renew:
                renew = True
                continue
            if response.is_success:
                try:
                    body = response.json()
                except ValueError as exc:  # 2xx but garbled: done or not, unknown
                    raise YouTubeAPIError(502, "badResponse", response.text[:200]) from exc
                return body if isinstance(body, dict) else {}
            raise _error_from(response)
        raise AssertionError("unreachable: the second attempt returns or raises")


# -- polling ---------------------------------------------------------------------------


def _when(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _video_ids(credentials: Mapping[str, Any]) -> list[str]:
    raw = credentials.get("video_ids") or []
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    return list(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))


class YouTubePoller(_YouTubeAPI, CommentPoller):
    """Polls ``commentThreads.list`` for a channel (or chosen videos), newest first.

    The cursor holds, per source (``channel:<id>`` or ``video:<id>``), the
    newest ``publishedAt`` seen and the ids seen from ``lookback_seconds``
    before it: ``publishedAt`` has one-second resolution and comments can
    become visible a little after their timestamp, so the window is read
    again and the ids keep it from being answered twice.

    - First poll of a source: one page read, only the cursor kept. Comments
      written before the account was connected are never answered.
    - Paging stops at the first thread older than the window, at the last
      page, or after ``max_pages`` (a burst larger than that is cut to its
      newest part, logged as ``youtube_poll_truncated``).
    - Replies come from each thread's ``replies`` part (a subset YouTube
      picks) on the pages read; a new reply under an older thread than those
      is not seen, because threads are ordered by their top-level comment.
    - ``quotaExceeded``: ``retry_after`` until the quota resets (midnight
      Pacific); rate limits, 5xx and network errors: ``retry_after`` =
      ``backoff_seconds`` (or the server's ``Retry-After``), the caller
      growing it; 401/403/400: ``error_backoff_seconds`` and the error kept
      in ``cursor["error"]``. A source that failed keeps its old cursor and
      yields nothing this time (no half-read pages), sources read before it
      keep their results. ``commentsDisabled`` or a deleted video: that
      video is skipped (``cursor["skipped"]``), the others are read.
    """

    name = "youtube"

    def __init__(
        self,
        api_url: str = API_URL,
        *,
        page_size: int = 100,
        max_pages: int = 5,
        lookback_seconds: float = 60.0,
        error_backoff_seconds: float = 900.0,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(api_url, **options)
        if not 1 <= page_size <= 100:
            raise ValueError("page_size must be 1..100 (the API's maxResults range)")
        self.page_size = page_size
        self.max_pages = max(1, max_pages)
        self.lookback = timedelta(seconds=max(0.0, lookback_seconds))
        self.error_backoff_seconds = error_backoff_seconds

    @classmethod
    def from_settings(cls, settings: SocialSettings, **overrides: Any) -> YouTubePoller:
        """A poller for ``SALON_YOUTUBE_API_URL`` with the pipeline's request timeout."""
        overrides.setdefault("timeout", settings.social_request_timeout_seconds)
        return cls(settings.youtube_api_url, **overrides)

    async def poll(
        self, credentials: Mapping[str, Any], account_id: str, cursor: Mapping[str, Any]
    ) -> PollResult:
        """Comments newer than ``cursor`` on the channel ``account_id`` (or its chosen videos)."""
        videos = _video_ids(credentials)
        sources = [(f"video:{v}", {"videoId": v}) for v in videos] or [
            (f"channel:{account_id}", {"allThreadsRelatedToChannelId": account_id})
        ]
        old: Mapping[str, Any] = cursor.get("sources") or {}
        # Only watched sources are kept: a video dropped from video_ids forgets its cursor.
        out: dict[str, Any] = {"sources": {k: old[k] for k, _ in sources if k in old}}
        found: dict[str, InboundComment] = {}
        spent = [0]  # quota units, kept by the sources that fail half-way too
        retry_after: float | None = None
        for key, filters in sources:
            try:
                comments, out["sources"][key] = await self._poll_source(
                    credentials, account_id, filters, old.get(key), spent
                )
            except YouTubeAPIError as exc:
                if key.startswith("video:") and (
                    exc.reason in ("commentsDisabled", "videoNotFound") or exc.status == 404
                ):
                    out.setdefault("skipped", {})[key] = exc.reason or str(exc.status)
                    continue
                if exc.quota:
                    retry_after = self.quota_retry_after()
                elif exc.transient:
                    retry_after = exc.retry_after or self.backoff_seconds
                else:  # the credentials or the channel: an operator has to act
                    retry_after = self.error_backoff_seconds
                    out["error"] = {
                        "status": exc.status,
                        "reason": exc.reason,
                        "message": exc.message,
                    }
                log.warning("youtube_poll_failed", account=account_id, source=key, error=str(exc))
                break  # the same limit or outage would refuse the next sources too
            for comment in comments:
                found.setdefault(comment.comment_id, comment)
        ordered = sorted(found.values(), key=lambda c: c.created_at or _EPOCH)
        return PollResult(ordered, out, quota_used=spent[0], retry_after=retry_after)

    async def _poll_source(
        self,
        credentials: Mapping[str, Any],
        account_id: str,
        filters: dict[str, str],
        state: Mapping[str, Any] | None,
        spent: list[int],
    ) -> tuple[list[InboundComment], dict[str, Any]]:
        first = state is None
        since = _when((state or {}).get("since"))
        seen: dict[str, str] = dict((state or {}).get("seen") or {})
        floor = since - self.lookback if since is not None else None
        observed: dict[str, datetime] = {}
        new: list[InboundComment] = []
        params = {"part": "snippet,replies", "order": "time", "textFormat": "plainText", **filters}
        params["maxResults"] = str(self.page_size)
        for _ in range(1 if first else self.max_pages):
            try:
                page = await self._call("GET", "/commentThreads", credentials, params=params)
            except YouTubeAPIError as exc:  # Google bills refused calls, not quota refusals
                spent[0] += LIST_COST if exc.status and not exc.quota else 0
                raise
            spent[0] += LIST_COST
            reached_old = False
            for thread in page.get("items") or []:
                for comment in _thread_comments(thread, account_id):
                    assert comment.created_at is not None  # _comment drops undated items
                    observed[comment.comment_id] = comment.created_at
                    if first or comment.comment_id in seen:
                        continue
                    if floor is None or comment.created_at >= floor:
                        new.append(comment)
                    # Threads come newest first by their top-level comment: the rest is older.
                    if comment.kind == "comment" and floor and comment.created_at < floor:
                        reached_old = True
            params["pageToken"] = page.get("nextPageToken") or ""
            if reached_old or not params["pageToken"]:
                break
        else:
            if not first:
                log.warning("youtube_poll_truncated", account=account_id, **filters)
        return new, _merge_seen(since, seen, observed, self.lookback)


def _merge_seen(
    since: datetime | None,
    seen: Mapping[str, str],
    observed: Mapping[str, datetime],
    lookback: timedelta,
) -> dict[str, Any]:
    """The source's next cursor: the newest time seen, and every id inside the window before it."""
    times = {k: t for k, v in seen.items() if (t := _when(v)) is not None}
    times.update(observed)
    newest = max([*times.values(), *([since] if since else [])], default=None)
    if newest is None:
        return {"since": None, "seen": {}}
    floor = newest - lookback
    keep = sorted(((t, k) for k, t in times.items() if t >= floor), reverse=True)[:MAX_SEEN]
    return {"since": newest.isoformat(), "seen": {k: t.isoformat() for t, k in keep}}


def _thread_comments(thread: Mapping[str, Any], account_id: str) -> Iterator[InboundComment]:
    """The thread's top-level comment, then the replies it carries; malformed items skipped."""
    snippet = thread.get("snippet") or {}
    top = snippet.get("topLevelComment") or {}
    top_id = top.get("id") or thread.get("id")
    items = [(top, None)] + [
        (r, (r.get("snippet") or {}).get("parentId") or top_id)
        for r in (thread.get("replies") or {}).get("comments") or []
    ]
    for item, parent in items:
        parsed = _comment(item, account_id, snippet.get("videoId"), parent=parent)
        if parsed is not None:
            yield parsed


def _comment(
    item: Mapping[str, Any], account_id: str, video: str | None, *, parent: str | None
) -> InboundComment | None:
    snippet = item.get("snippet") or {}
    created = _when(snippet.get("publishedAt"))
    if not item.get("id") or created is None:
        return None
    author = str((snippet.get("authorChannelId") or {}).get("value") or "")
    # textOriginal is only returned to the comment's author; textDisplay (asked
    # for as plainText) is what everyone else gets.
    text = snippet.get("textOriginal") or snippet.get("textDisplay") or ""
    return InboundComment(
        platform="youtube",
        account_id=account_id,
        comment_id=str(item["id"]),
        text=str(text),
        author_id=author,
        author_name=str(snippet.get("authorDisplayName") or ""),
        author_is_account=bool(author) and author == account_id,
        post_id=snippet.get("videoId") or video,
        parent_id=parent,
        created_at=created,
        kind="reply" if parent else "comment",
        raw=dict(item),
    )


# -- replying --------------------------------------------------------------------------


class YouTubeReplyClient(_YouTubeAPI, ReplyClient):
    """Replies with ``comments.insert`` (``part=snippet``, 50 quota units).

    YouTube threads are one level deep: a reply must name a top-level
    comment, so answering a reply posts into its thread (``parentId`` = the
    reply's ``parent_id``). The API has no idempotency key. When an attempt
    may have gone through without an answer (a timeout after sending, a 5xx),
    the next attempt with the same ``idempotency_key`` in this process first
    lists the thread's replies (``comments.list``, 1 unit) and returns the
    channel's reply with the same text posted since, instead of posting it
    twice; across processes the caller's once-per-key record is the guard.
    """

    platform = "youtube"

    def __init__(self, api_url: str = API_URL, **options: Unpack[ClientOptions]) -> None:
        super().__init__(api_url, **options)
        self._maybe_posted: dict[str, datetime] = {}  # idempotency key -> first unsure attempt

    @classmethod
    def from_settings(cls, settings: SocialSettings, **overrides: Any) -> YouTubeReplyClient:
        """A client for ``SALON_YOUTUBE_API_URL`` with the pipeline's request timeout."""
        overrides.setdefault("timeout", settings.social_request_timeout_seconds)
        return cls(settings.youtube_api_url, **overrides)

    async def reply(
        self,
        credentials: Mapping[str, Any],
        comment: InboundComment,
        text: str,
        *,
        idempotency_key: str,
    ) -> ReplyResult:
        """Post ``text`` in ``comment``'s thread; the new comment's id, or :class:`ReplyError`."""
        if not text.strip():
            raise ReplyError("invalid", "the reply text is empty", retryable=False)
        parent = comment.parent_id or comment.comment_id
        started = self.clock()
        try:
            unsure_since = self._maybe_posted.get(idempotency_key)
            if unsure_since is not None:
                earlier = await self._find_posted(
                    credentials, comment.account_id, parent, text, unsure_since
                )
                if earlier is not None:
                    self._maybe_posted.pop(idempotency_key, None)
                    return ReplyResult(reply_id=earlier)
            body = await self._call(
                "POST",
                "/comments",
                credentials,
                params={"part": "snippet"},
                json={"snippet": {"parentId": parent, "textOriginal": text}},
                write=True,
            )
        except YouTubeAPIError as exc:
            if exc.maybe_sent:
                self._remember(idempotency_key, started)
            raise self._reply_error(exc) from exc
        reply_id = body.get("id")
        if not reply_id:
            self._remember(idempotency_key, started)
            raise ReplyError("unavailable", "YouTube answered without a comment id", retryable=True)
        self._maybe_posted.pop(idempotency_key, None)
        return ReplyResult(reply_id=str(reply_id))

    def _remember(self, key: str, started: datetime) -> None:
        self._maybe_posted.setdefault(key, started)
        while len(self._maybe_posted) > 1000:  # bounded: oldest unsure attempts forgotten
            self._maybe_posted.pop(next(iter(self._maybe_posted)))

    async def _find_posted(
        self, credentials: Mapping[str, Any], channel: str, parent: str, text: str, since: datetime
    ) -> str | None:
        """The channel's reply under ``parent`` with this text since ``since`` (less skew)."""
        params = {
            "part": "snippet",
            "parentId": parent,
            "maxResults": "100",
            "textFormat": "plainText",
        }
        for _ in range(5):  # 500 replies: a thread busier than that is not searched further
            page = await self._call("GET", "/comments", credentials, params=params)
            for item in page.get("items") or []:
                snippet = item.get("snippet") or {}
                said = str(snippet.get("textOriginal") or snippet.get("textDisplay") or "")
                posted = _when(snippet.get("publishedAt"))
                if (
                    (snippet.get("authorChannelId") or {}).get("value") == channel
                    and said.strip() == text.strip()
                    and posted is not None
                    and posted >= since - timedelta(minutes=5)
                ):
                    return str(item.get("id"))
            params["pageToken"] = page.get("nextPageToken") or ""
            if not params["pageToken"]:
                break
        return None

    def _reply_error(self, exc: YouTubeAPIError) -> ReplyError:
        """YouTube's status and reason to the pipeline's codes (docs/integrations-youtube.md)."""
        what = f"YouTube {exc.status or 'unreachable'} {exc.reason}: {exc.message}"
        if exc.quota:
            wait = self.quota_retry_after()
            return ReplyError("rate_limited", what, retryable=True, retry_after=wait)
        if exc.status == 429 or exc.reason in RATE_REASONS:
            wait = exc.retry_after or self.backoff_seconds
            return ReplyError("rate_limited", what, retryable=True, retry_after=wait)
        if exc.status == 401:
            return ReplyError("unauthorized", what, retryable=False)
        # forbidden, insufficientPermissions, ineligibleAccount, commentsDisabled: not retried
        if exc.status == 403:
            return ReplyError("forbidden", what, retryable=False)
        if exc.status == 404 or exc.reason == "commentNotFound":
            return ReplyError("not_found", what, retryable=False)
        if exc.status == 0 or exc.status >= 500:
            return ReplyError("unavailable", what, retryable=True, retry_after=exc.retry_after)
        return ReplyError("invalid", what, retryable=False)
