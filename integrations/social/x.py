"""X: Account Activity webhooks in, API v2 replies out (docs/integrations-x.md).

- :class:`XWebhook` answers X's Challenge-Response Check (``crc_token`` ->
  ``response_token``), checks ``x-twitter-webhooks-signature`` (base64
  HMAC-SHA256 of the raw body, keyed with the app's consumer secret) in
  constant time, and turns ``tweet_create_events`` that reply to or mention
  the subscribed account into :class:`InboundComment` values.
- :class:`XReplyClient` posts replies with ``POST /2/tweets`` and a user's
  OAuth 2.0 access token, and maps X's errors to :class:`ReplyError`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from integrations.social.base import (
    ChallengeAnswer,
    InboundComment,
    ReplyClient,
    ReplyError,
    ReplyResult,
    WebhookError,
    WebhookReceiver,
)

if TYPE_CHECKING:
    from integrations.social.settings import SocialSettings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-twitter-webhooks-signature"
SECRET_PREFIX = "consumer_secret"
_SIGNATURE = re.compile(r"sha256=([A-Za-z0-9+/]{43}=)")  # 32 bytes, base64
_TWEET_ID = re.compile(r"[0-9]{1,25}")
# v1.1 tweet objects: "Wed Oct 10 20:19:24 +0000 2018"
_CREATED_AT_FORMAT = "%a %b %d %H:%M:%S %z %Y"

# X's 403 detail for a tweet identical to one the user posted recently:
# typically our own earlier attempt whose answer was lost (XReplyClient).
DUPLICATE_DETAIL = "duplicate content"
_GONE_DETAIL = "deleted or not visible"  # replying to a tweet that was deleted
# v1.1 and v2 have phrased "over 280 weighted characters" both ways.
_TOO_LONG_DETAILS = ("too long", "a bit shorter")


def _candidates(secrets: Mapping[str, str]) -> list[bytes]:
    """The non-empty consumer secrets, in the order given.

    Empty values are dropped: an HMAC keyed with ``b""`` is something anyone
    can compute.
    """
    return [v.encode() for k, v in secrets.items() if k.startswith(SECRET_PREFIX) and v]


def _header(headers: Mapping[str, str], name: str) -> str:
    # Starlette's Headers are case-insensitive; a plain dict is not.
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), "")
    return value


class XWebhook(WebhookReceiver):
    """Receives an X app's Account Activity webhook deliveries at ``/v1/webhooks/x``.

    Secrets are given per call: every value whose key starts with
    ``consumer_secret`` is a candidate (the deployment's app, or the one
    tenant app named by the webhook URL's ``?app=<id>``).

    Freshness. X signs no timestamp, but the signed body carries each
    tweet's own time (``timestamp_ms`` / ``created_at``), which is as
    trustworthy as the signature. It is *not* held to a few minutes: X
    retries a failed delivery for about five minutes after the first try,
    and Account Activity Replay re-delivers events up to five days old, so
    a tight window would refuse legitimate deliveries (and lose their
    comments for good). Replays inside the window are stopped by the
    pipeline's deduplication on tweet id instead. Past that window
    deduplication has forgotten the tweet, so a delivery whose newest
    tweet is older than ``max_age_seconds`` (plus ``max_skew_seconds`` for
    clocks that disagree) is refused as ``stale``. ``max_age_seconds``
    should therefore not exceed ``SALON_SOCIAL_DEDUPE_HOURS``; ``None``
    turns the check off.
    """

    name = "x"

    def __init__(
        self,
        *,
        max_skew_seconds: float = 300.0,
        max_age_seconds: float | None = 72 * 3600.0,
    ) -> None:
        self.max_skew_seconds = max_skew_seconds
        self.max_age_seconds = max_age_seconds

    @classmethod
    def from_settings(cls, settings: SocialSettings) -> XWebhook:
        """Age limit = the deduplication window, skew = ``SALON_SOCIAL_MAX_SKEW_SECONDS``."""
        return cls(
            max_skew_seconds=settings.social_max_skew_seconds,
            max_age_seconds=settings.social_dedupe_hours * 3600.0,
        )

    def challenge(self, query: Mapping[str, str], secrets: Mapping[str, str]) -> ChallengeAnswer:
        """Answer the CRC: ``{"response_token": "sha256=<base64 HMAC>"}`` as JSON.

        X sends no hint of which app it is checking, so with several
        candidates the first one answers. That is why a tenant's own X app
        registers its own webhook URL (``/v1/webhooks/x?app=<id>``): the
        caller then passes only that app's secret.
        """
        crc_token = query.get("crc_token")
        if not crc_token:
            raise WebhookError("verification_failed", "no crc_token in the request")
        keys = _candidates(secrets)
        if not keys:
            raise WebhookError("verification_failed", "no X consumer secret is configured")
        digest = hmac.new(keys[0], crc_token.encode(), hashlib.sha256).digest()
        body = json.dumps({"response_token": "sha256=" + base64.b64encode(digest).decode()})
        return ChallengeAnswer(body=body, media_type="application/json")

    def verify(
        self, raw: bytes, headers: Mapping[str, str], secrets: Mapping[str, str], now: datetime
    ) -> None:
        """Check ``x-twitter-webhooks-signature`` over ``raw``, then the delivery's age.

        The HMAC is computed on the bytes exactly as received (never on
        re-serialized JSON), and compared against every candidate with no
        early exit, so timing tells nothing about which app matched.
        """
        match = _SIGNATURE.fullmatch(_header(headers, SIGNATURE_HEADER).strip())
        if match is None:
            raise WebhookError("bad_signature", "missing or malformed x-twitter-webhooks-signature")
        # The pattern admits base64 of exactly 32 bytes only, so this cannot fail.
        given = base64.b64decode(match.group(1))
        keys = _candidates(secrets)
        if not keys:
            raise WebhookError("bad_signature", "no X consumer secret is configured")
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(given, hmac.new(key, raw, hashlib.sha256).digest())
        if not matched:
            raise WebhookError("bad_signature", "x-twitter-webhooks-signature does not match")
        self._check_age(raw, now)

    def _check_age(self, raw: bytes, now: datetime) -> None:
        if self.max_age_seconds is None:
            return
        try:
            body = json.loads(raw)
        except ValueError:
            return  # parse() refuses it as malformed
        events = body.get("tweet_create_events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            return
        times = [t for t in (_tweet_time(e) for e in events if isinstance(e, dict)) if t]
        if not times:
            return  # nothing dated: deduplication alone protects it
        limit = timedelta(seconds=self.max_age_seconds + self.max_skew_seconds)
        newest = max(times)
        if newest < now - limit:
            raise WebhookError(
                "stale", f"newest tweet of the delivery is from {newest.isoformat()}"
            )

    def parse(self, raw: bytes) -> list[InboundComment]:
        """The replies to and mentions of the subscribed account in ``tweet_create_events``.

        Skipped, not errors: retweets, tweets that neither reply to nor
        mention the account (quote tweets of it, for instance), others'
        tweets in a delivery flagged with a block (``user_has_blocked`` /
        ``is_blocked_by``), every other event type (likes, follows, DMs,
        deletes) and Replay's job status messages. The
        account's own tweets are returned, flagged ``author_is_account``
        (the pipeline never answers them). Raises ``malformed`` when the
        body is not an Account Activity delivery.
        """
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise WebhookError("malformed", "the delivery is not JSON") from exc
        if not isinstance(body, dict):
            raise WebhookError("malformed", "the delivery is not a JSON object")
        events = body.get("tweet_create_events")
        if events is None:
            return []
        account_id = body.get("for_user_id")
        if not isinstance(account_id, str) or not account_id or not isinstance(events, list):
            raise WebhookError(
                "malformed", "tweet_create_events without for_user_id, or not a list"
            )
        # Mention deliveries say whether a block stands between the account
        # and the author (X's samples show "user_has_blocked": "false", its
        # field table "is_blocked_by"; strings or booleans). Either way a
        # reply would be unwelcome or refused: such tweets are skipped.
        blocked = any(
            str(body.get(flag, "")).lower() == "true"
            for flag in ("user_has_blocked", "is_blocked_by")
        )
        comments = []
        for tweet in events:
            comment = _comment(account_id, tweet, blocked=blocked)
            if comment is not None:
                comments.append(comment)
        return comments


def _comment(account_id: str, tweet: Any, *, blocked: bool) -> InboundComment | None:
    if not isinstance(tweet, dict):
        raise WebhookError("malformed", "a tweet_create_events item is not an object")
    tweet_id = tweet.get("id_str")
    user = tweet.get("user")
    author_id = user.get("id_str") if isinstance(user, dict) else None
    if not isinstance(tweet_id, str) or not isinstance(author_id, str):
        raise WebhookError("malformed", "a tweet without id_str or user.id_str")
    if "retweeted_status" in tweet:
        return None
    own = author_id == account_id
    if blocked and not own:
        return None
    parent_id = _str(tweet.get("in_reply_to_status_id_str"))
    replies_to_account = _str(tweet.get("in_reply_to_user_id_str")) == account_id
    if own:
        kind = "reply" if parent_id else "comment"
    elif replies_to_account:
        kind = "reply"
    elif _mentions(tweet, account_id):
        kind = "mention"
    else:
        return None  # a quote tweet or a retweet of a quote, say: not addressed to the account
    # X's v1.1 payloads carry no conversation id; newer ones may. The root of
    # the conversation is "the post" (as a media is for an Instagram comment).
    root = _str(tweet.get("conversation_id_str")) or _str(tweet.get("conversation_id"))
    post_id = root if root and root != tweet_id else parent_id
    extended = tweet.get("extended_tweet")
    text = (extended.get("full_text") if isinstance(extended, dict) else None) or (
        tweet.get("full_text") or tweet.get("text") or ""
    )
    return InboundComment(
        platform="x",
        account_id=account_id,
        comment_id=tweet_id,
        # v1.1 text has &, < and > HTML-escaped.
        text=html.unescape(str(text)),
        author_id=author_id,
        author_name=str(user.get("screen_name") or "") if isinstance(user, dict) else "",
        author_is_account=own,
        post_id=post_id,
        parent_id=parent_id,
        created_at=_tweet_time(tweet),
        kind=kind,
        raw=tweet,
    )


def _str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def _mentions(tweet: Mapping[str, Any], account_id: str) -> bool:
    # A long tweet's mentions are in extended_tweet.entities; the top-level
    # entities then cover only the truncated text.
    for holder in (tweet, tweet.get("extended_tweet")):
        entities = holder.get("entities") if isinstance(holder, dict) else None
        mentions = entities.get("user_mentions") if isinstance(entities, dict) else None
        if isinstance(mentions, list) and any(
            isinstance(m, dict) and m.get("id_str") == account_id for m in mentions
        ):
            return True
    return False


def _tweet_time(tweet: Mapping[str, Any]) -> datetime | None:
    """``timestamp_ms`` (a string of epoch milliseconds), else ``created_at``."""
    stamp = tweet.get("timestamp_ms")
    if stamp is not None:
        try:
            return datetime.fromtimestamp(int(stamp) / 1000, UTC)
        except (TypeError, ValueError, OverflowError, OSError):
            pass
    created = tweet.get("created_at")
    if isinstance(created, str):
        try:
            return datetime.strptime(created, _CREATED_AT_FORMAT).astimezone(UTC)
        except ValueError:
            return None
    return None


def _reset_after(headers: httpx.Headers, now: float) -> float | None:
    """Seconds until the exhausted X limit resets (``x-*-reset`` are epoch seconds).

    ``POST /2/tweets`` has a 15-minute window and 24-hour caps per user and
    per app; whichever is exhausted (``remaining: 0``) is the one to wait for.
    """
    resets: list[float] = []
    fallback: float | None = None
    for prefix in ("x-rate-limit", "x-user-limit-24hour", "x-app-limit-24hour"):
        try:
            reset = float(headers.get(f"{prefix}-reset", ""))
        except ValueError:
            continue
        if not math.isfinite(reset):
            continue
        if prefix == "x-rate-limit":
            fallback = reset
        if headers.get(f"{prefix}-remaining") == "0":
            resets.append(reset)
    target = max(resets) if resets else fallback
    return None if target is None else max(0.0, target - now)


def map_x_error(status: int, body: Any, headers: httpx.Headers, now: float) -> ReplyError:
    """The :class:`ReplyError` for an X API v2 error answer.

    X answers problems as ``{"title", "detail", "type", "status"}`` and
    validation errors as ``{"errors": [{"message"}], "title", "detail"}``.
    """
    parts: list[str] = []
    if isinstance(body, dict):
        parts.append(str(body.get("detail") or body.get("title") or ""))
        errors = body.get("errors")
        first = errors[0] if isinstance(errors, list) and errors else None
        if isinstance(first, dict):
            # The validation detail is generic; the first error names the field.
            parts.append(str(first.get("message") or ""))
    detail = "; ".join(p for p in parts if p)
    message = f"X answered {status}: {detail}" if detail else f"X answered {status}"
    lowered = detail.lower()
    if status == 429:
        return ReplyError(
            "rate_limited", message, retryable=True, retry_after=_reset_after(headers, now)
        )
    if status == 401:
        return ReplyError("unauthorized", message, retryable=False)
    if status == 403:
        if DUPLICATE_DETAIL in lowered or any(d in lowered for d in _TOO_LONG_DETAILS):
            # The text itself was refused. A duplicate usually means an earlier
            # attempt of this very reply was posted but its answer was lost:
            # retrying can only fail the same way.
            return ReplyError("invalid", message, retryable=False)
        if _GONE_DETAIL in lowered:
            return ReplyError("not_found", message, retryable=False)
        return ReplyError("forbidden", message, retryable=False)
    if status in (404, 410):
        return ReplyError("not_found", message, retryable=False)
    if status >= 500 or status == 408:
        return ReplyError("unavailable", message, retryable=True)
    return ReplyError("invalid", message, retryable=False)


class XReplyClient(ReplyClient):
    """Replies to tweets with ``POST {api_url}/2/tweets``.

    Request: ``{"text": ..., "reply": {"in_reply_to_tweet_id": <comment id>}}``
    with ``Authorization: Bearer <credentials["access_token"]>``, an OAuth
    2.0 user-context token of the connected account (scopes ``tweet.read
    tweet.write users.read``). OAuth 1.0a user context is not implemented.

    Idempotency: X has no idempotency key; ``idempotency_key`` is not sent
    (the caller records it so a reply is posted at most once). When a
    request was sent but its answer lost (timeout, dropped connection) the
    tweet may exist; the error is still ``unavailable`` and retryable, and
    the retry then meets X's duplicate-content check: a 403 "duplicate
    content" is mapped to ``invalid`` (not retryable), so the reply is
    never posted twice, at the cost of not knowing its id.
    """

    platform = "x"

    def __init__(
        self,
        api_url: str = "https://api.x.com",
        *,
        timeout: float = 20.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self._transport = transport
        self._clock = clock  # epoch seconds: x-rate-limit-reset is compared with it
        self._http: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: SocialSettings) -> XReplyClient:
        """A client for ``SALON_X_API_URL`` with ``SALON_SOCIAL_REQUEST_TIMEOUT_SECONDS``."""
        return cls(settings.x_api_url, timeout=settings.social_request_timeout_seconds)

    def _client(self) -> httpx.AsyncClient:
        # Opened on first use: the client is built at configuration time,
        # possibly outside the event loop that will use it.
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout), transport=self._transport
            )
        return self._http

    async def reply(
        self,
        credentials: Mapping[str, Any],
        comment: InboundComment,
        text: str,
        *,
        idempotency_key: str,
    ) -> ReplyResult:
        """Post ``text`` as the connected account's reply to the tweet ``comment``."""
        if comment.platform != "x":
            raise ReplyError("invalid", f"not an X comment: {comment.platform}", retryable=False)
        token = credentials.get("access_token")
        if not isinstance(token, str) or not token:
            raise ReplyError("unauthorized", "no X access_token in credentials", retryable=False)
        if not text.strip():
            raise ReplyError("invalid", "empty reply text", retryable=False)
        if not _TWEET_ID.fullmatch(comment.comment_id):
            raise ReplyError("invalid", f"not a tweet id: {comment.comment_id!r}", retryable=False)
        url = f"{self.api_url}/2/tweets"
        payload = {"text": text, "reply": {"in_reply_to_tweet_id": comment.comment_id}}
        try:
            response = await self._client().post(
                url, json=payload, headers={"Authorization": f"Bearer {token}"}
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ReplyError("unavailable", f"X unreachable: {exc!r}", retryable=True) from exc
        except httpx.TransportError as exc:
            # Sent, but no answer: the tweet may exist (see the class docstring).
            raise ReplyError(
                "unavailable", f"X did not answer (the reply may exist): {exc!r}", retryable=True
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if not response.is_success:
            error = map_x_error(response.status_code, body, response.headers, self._clock())
            log.info(
                "x: reply to %s failed: %s (%s)", comment.comment_id, error.code, error.message
            )
            raise error
        data = body.get("data") if isinstance(body, dict) else None
        reply_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(reply_id, str) or not reply_id:
            # Accepted, yet no id: the tweet probably exists, so no retry.
            raise ReplyError("unavailable", "X answered without data.id", retryable=False)
        return ReplyResult(reply_id=reply_id)

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
