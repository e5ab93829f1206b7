"""Meta (Instagram and Facebook Pages): comment webhooks in, Graph API replies out.

Both products reach Salon through one Meta app, so they share one endpoint
(``/v1/webhooks/meta``), one signature scheme and one reply client
(docs/integrations-meta.md):

- :class:`MetaWebhook` answers the ``hub.*`` verification GET, checks
  ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body with the app secret)
  in constant time, and turns Instagram ``comments`` / ``live_comments``
  changes and Page ``feed`` comment items into :class:`InboundComment`.
- :class:`MetaReplyClient` posts the replies through the Graph API and maps
  Graph's errors to :class:`ReplyError`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
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

SIGNATURE_HEADER = "x-hub-signature-256"
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")

INSTAGRAM_FIELDS = {"comments": "comment", "live_comments": "live_comment"}
PAGE_COMMENT_VERBS = ("add", "edited")

# Graph error codes (developers.facebook.com/docs/graph-api/guides/error-handling).
# 4, 17, 32, 613: application, user, page and custom rate limits; 80000-80014:
# business use case rate limits (the Instagram and Pages APIs use these).
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, *range(80000, 80015)})
AUTH_CODES = frozenset({102, 190})  # session / access token invalid or expired
TRANSIENT_CODES = frozenset({1, 2})  # "unknown error", "service temporarily unavailable"
NOT_FOUND_SUBCODE = 33  # code 100: "object ... does not exist, cannot be loaded ..."

# A Graph object id as it appears in a path: digits, or Page-style "post_comment".
_GRAPH_ID = re.compile(r"[0-9A-Za-z_-]{1,128}")


def _candidates(secrets: Mapping[str, str], prefix: str) -> list[bytes]:
    """The non-empty secrets whose name starts with ``prefix``.

    Empty values are dropped on purpose: an HMAC keyed with ``b""`` or a
    verify token of ``""`` is something anyone can produce.
    """
    return [v.encode() for k, v in secrets.items() if k.startswith(prefix) and v]


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    # Starlette's Headers are case-insensitive already; a plain dict from a
    # test or another framework is not, so normalize both the same way.
    return {k.lower(): v for k, v in headers.items()}


class MetaWebhook(WebhookReceiver):
    """Receives the Meta app's webhook deliveries for Instagram and Pages.

    Secrets are given per call, by name: every value whose key starts with
    ``verify_token`` is a candidate verify token, every value whose key
    starts with ``app_secret`` a candidate app secret (the deployment's app
    and the tenants' own apps).
    """

    name = "meta"

    def challenge(self, query: Mapping[str, str], secrets: Mapping[str, str]) -> ChallengeAnswer:
        """Answer ``hub.challenge`` when ``hub.mode=subscribe`` and the verify token matches."""
        mode = query.get("hub.mode")
        token = query.get("hub.verify_token")
        answer = query.get("hub.challenge")
        if mode != "subscribe" or not token or not answer:
            raise WebhookError("verification_failed", "not a subscription verification request")
        given = token.encode()
        # Every candidate is compared (no early exit) so the timing says nothing
        # about which app, if any, the token belongs to.
        matched = False
        for candidate in _candidates(secrets, "verify_token"):
            matched |= hmac.compare_digest(given, candidate)
        if not matched:
            raise WebhookError("verification_failed", "hub.verify_token does not match")
        return ChallengeAnswer(body=answer, media_type="text/plain")

    def verify(
        self, raw: bytes, headers: Mapping[str, str], secrets: Mapping[str, str], now: datetime
    ) -> None:
        """Check ``X-Hub-Signature-256`` over the raw bytes against every candidate app secret.

        Meta signs the body exactly as sent (non-ASCII escaped as ``\\uXXXX``),
        so the HMAC is computed on ``raw``, never on re-serialized JSON.

        No freshness check: Meta signs no timestamp, and it retries a failed
        delivery for up to about 36 hours with the original entry ``time``,
        so refusing old entries would refuse legitimate retries. Replays of a
        captured delivery are harmless instead because the pipeline dedupes
        comments by id (``SALON_SOCIAL_DEDUPE_HOURS``, 72 h by default, longer
        than Meta's retry window). ``now`` is therefore unused.
        """
        value = _lower_headers(headers).get(SIGNATURE_HEADER, "").strip()
        match = _SIGNATURE.fullmatch(value)
        if match is None:
            raise WebhookError("bad_signature", "missing or malformed X-Hub-Signature-256")
        given = match.group(1).lower().encode()
        keys = _candidates(secrets, "app_secret")
        if not keys:
            raise WebhookError("bad_signature", "no Meta app secret is configured")
        matched = False
        for key in keys:
            expected = hmac.new(key, raw, hashlib.sha256).hexdigest().encode()
            matched |= hmac.compare_digest(given, expected)
        if not matched:
            raise WebhookError("bad_signature", "X-Hub-Signature-256 does not match")

    def parse(self, raw: bytes) -> list[InboundComment]:
        """The comments of a verified delivery.

        The envelope (``object``, ``entry[]``, ``changes[]``) must have Meta's
        shape, or the delivery is ``malformed``. Inside it, anything that is
        not a comment (other objects, other fields, Page posts, reactions,
        removals) is skipped, and so is a comment item missing its id: Meta
        batches many items per delivery and retries a refused one for hours,
        so one odd item must not block (or endlessly replay) the others.
        """
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WebhookError("malformed", f"not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise WebhookError("malformed", "the body is not a JSON object")
        obj, entries = body.get("object"), body.get("entry")
        if not isinstance(obj, str) or not isinstance(entries, list):
            raise WebhookError("malformed", "expected {object: str, entry: [...]}")
        if obj not in ("instagram", "page"):
            return []  # "user", "permissions", "whatsapp_business_account"...: not ours
        comments: list[InboundComment] = []
        for entry in entries:
            account_id, changes = _entry(entry)
            for change in changes:
                field, value = _change(change)
                if obj == "instagram" and field in INSTAGRAM_FIELDS:
                    comment = _instagram(account_id, INSTAGRAM_FIELDS[field], value)
                elif obj == "page" and field == "feed":
                    comment = _page(account_id, value)
                else:
                    continue
                if comment is not None:
                    comments.append(comment)
        return comments


def _entry(entry: Any) -> tuple[str, list[Any]]:
    if not isinstance(entry, dict):
        raise WebhookError("malformed", "an entry is not an object")
    account_id = entry.get("id")
    if isinstance(account_id, int) and not isinstance(account_id, bool):
        account_id = str(account_id)
    if not isinstance(account_id, str) or not account_id:
        raise WebhookError("malformed", "an entry has no id")
    # Entries without "changes" exist (Messenger's "messaging", "standby"): no comments.
    changes = entry.get("changes", [])
    if not isinstance(changes, list):
        raise WebhookError("malformed", "entry.changes is not a list")
    return account_id, changes


def _change(change: Any) -> tuple[str, Any]:
    if not isinstance(change, dict) or not isinstance(change.get("field"), str):
        raise WebhookError("malformed", "a change is not {field, value}")
    return change["field"], change.get("value")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _id(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def _unix_time(value: Any) -> datetime | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _instagram(account_id: str, kind: str, value: Any) -> InboundComment | None:
    """An Instagram ``comments`` / ``live_comments`` value (IG comment webhook shape)."""
    if not isinstance(value, dict) or _id(value.get("id")) is None:
        log.warning("meta: skipped an Instagram %s item without an id", kind)
        return None
    author, media = _obj(value.get("from")), _obj(value.get("media"))
    parent_id = _id(value.get("parent_id"))
    author_id = _id(author.get("id")) or ""
    return InboundComment(
        platform="instagram",
        account_id=account_id,
        comment_id=_id(value["id"]) or "",
        text=_text(value.get("text")) or "",
        author_id=author_id,
        author_name=_text(author.get("username")) or "",
        author_is_account=author_id == account_id,
        post_id=_id(media.get("id")),
        parent_id=parent_id,
        # The value has no creation time; entry.time is when Meta *sent* it
        # (a retry keeps the old one), so it is not passed off as one.
        created_at=None,
        kind="reply" if kind == "comment" and parent_id else kind,
        raw=value,
    )


def _page(page_id: str, value: Any) -> InboundComment | None:
    """A Page ``feed`` value, if it is a comment being added or edited."""
    if not isinstance(value, dict) or value.get("item") != "comment":
        return None  # posts, statuses, photos, reactions, shares...
    if value.get("verb") not in PAGE_COMMENT_VERBS:
        return None  # remove, hide, unhide: nothing to answer
    comment_id = _id(value.get("comment_id"))
    if comment_id is None:
        log.warning("meta: skipped a Page feed comment without comment_id")
        return None
    author = _obj(value.get("from"))
    author_id = _id(author.get("id")) or ""
    post_id = _id(value.get("post_id"))
    parent_id = _id(value.get("parent_id"))
    created_at = _unix_time(value.get("created_time"))
    return InboundComment(
        platform="facebook",
        account_id=page_id,
        comment_id=comment_id,
        # A comment with only a photo or sticker has no message.
        text=_text(value.get("message")) or "",
        author_id=author_id,
        author_name=_text(author.get("name")) or "",
        author_is_account=author_id == page_id,
        post_id=post_id,
        # Pages set parent_id to the post for a top-level comment: only a
        # parent that is another comment makes this a reply.
        parent_id=parent_id if parent_id != post_id else None,
        created_at=created_at,
        kind="reply" if parent_id and parent_id != post_id else "comment",
        raw=value,
    )


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from ``Retry-After`` or Meta's usage headers."""
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0.0, (when - datetime.now(UTC)).total_seconds())
    # Graph rarely sends Retry-After; its business use case header says how
    # long (in minutes) until the throttled account may call again.
    minutes: list[float] = []
    raw = headers.get("x-business-use-case-usage")
    if raw:
        try:
            usage = json.loads(raw)
        except json.JSONDecodeError:
            usage = None
        if isinstance(usage, dict):
            for items in usage.values():
                for item in items if isinstance(items, list) else []:
                    wait = (
                        item.get("estimated_time_to_regain_access")
                        if isinstance(item, dict)
                        else None
                    )
                    if isinstance(wait, int | float) and not isinstance(wait, bool):
                        minutes.append(float(wait))
    return max(minutes) * 60.0 if minutes and max(minutes) > 0 else None


def map_graph_error(status: int, body: Any, headers: httpx.Headers | None = None) -> ReplyError:
    """A :class:`ReplyError` for a Graph API error answer (HTTP status and JSON body).

    Graph reports most failures as HTTP 400 with ``{"error": {"code",
    "error_subcode", "message", "is_transient", ...}}``, so the code decides
    before the status does.
    """
    headers = headers if headers is not None else httpx.Headers()
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), int) else None
    subcode = error.get("error_subcode")
    message = str(error.get("message") or f"HTTP {status}")
    detail = f"Graph {status}" + (f" code {code}" if code is not None else "") + f": {message}"
    if status == 429 or code in RATE_LIMIT_CODES:
        return ReplyError("rate_limited", detail, retryable=True, retry_after=_retry_after(headers))
    if code in AUTH_CODES or status == 401:
        return ReplyError("unauthorized", detail, retryable=False)
    if code == 10 or (code is not None and 200 <= code <= 299) or status == 403:
        return ReplyError("forbidden", detail, retryable=False)
    if status == 404 or (
        code == 100 and (subcode == NOT_FOUND_SUBCODE or "does not exist" in message.lower())
    ):
        return ReplyError("not_found", detail, retryable=False)
    if status >= 500 or error.get("is_transient") is True or code in TRANSIENT_CODES:
        return ReplyError("unavailable", detail, retryable=True, retry_after=_retry_after(headers))
    return ReplyError("invalid", detail, retryable=False)


class MetaReplyClient(ReplyClient):
    """Replies to Instagram and Facebook Page comments through the Graph API.

    - Instagram comment: ``POST /{ig-comment-id}/replies`` with ``message``.
    - Instagram live comment: Meta allows no public reply to a live video
      comment, so it gets a private reply, ``POST /me/messages`` with
      ``{"recipient": {"comment_id"}, "message": {"text"}}`` (needs
      ``instagram_manage_messages``).
    - Facebook Page comment: ``POST /{comment-id}/comments`` with ``message``.

    A reply to a reply is posted on the top-level comment (``parent_id``):
    both platforms thread one level deep only.

    The access token is ``credentials["access_token"]`` (a Page access token,
    or an Instagram user token), sent as ``Authorization: Bearer`` so it never
    appears in a URL or an access log.

    Idempotency: Graph has no idempotency key. ``idempotency_key`` is only
    passed through; the caller records it so that a reply is posted at most
    once. Note that a timeout after the request was sent is ambiguous (the
    reply may exist): it is still ``unavailable`` and retryable, as the base
    contract says, and the error message says so.
    """

    platform = "meta"
    platforms = ("instagram", "facebook")

    def __init__(
        self,
        graph_url: str,
        *,
        timeout: float = 20.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.graph_url = graph_url.rstrip("/")
        self.timeout = timeout
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        # Opened on first use, inside the event loop that will use it.
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout), transport=self._transport
            )
        return self._http

    @classmethod
    def from_settings(cls, settings: SocialSettings) -> MetaReplyClient:
        """A client for ``SALON_META_GRAPH_URL`` with ``SALON_SOCIAL_REQUEST_TIMEOUT_SECONDS``."""
        return cls(settings.meta_graph_url, timeout=settings.social_request_timeout_seconds)

    async def reply(
        self,
        credentials: Mapping[str, Any],
        comment: InboundComment,
        text: str,
        *,
        idempotency_key: str,
    ) -> ReplyResult:
        """Post ``text`` as the connected account's reply to ``comment``."""
        if comment.platform not in self.platforms:
            raise ReplyError("invalid", f"not a Meta comment: {comment.platform}", retryable=False)
        token = credentials.get("access_token")
        if not isinstance(token, str) or not token:
            raise ReplyError("unauthorized", "no Meta access_token in credentials", retryable=False)
        if not text.strip():
            raise ReplyError("invalid", "empty reply text", retryable=False)
        target = comment.parent_id if comment.kind == "reply" and comment.parent_id else None
        target = target or comment.comment_id
        if not _GRAPH_ID.fullmatch(target):
            # Ids come from signed deliveries, but one is put in a URL path:
            # refuse anything that could change the path.
            raise ReplyError("invalid", f"not a Graph object id: {target!r}", retryable=False)

        if comment.platform == "instagram" and comment.kind == "live_comment":
            path = "/me/messages"
            request: dict[str, Any] = {
                "json": {"recipient": {"comment_id": comment.comment_id}, "message": {"text": text}}
            }
            id_field = "message_id"
        else:
            edge = "replies" if comment.platform == "instagram" else "comments"
            path = f"/{target}/{edge}"
            request = {"data": {"message": text}}
            id_field = "id"
        answer = await self._post(path, token, request)
        reply_id = _id(answer.get(id_field)) if isinstance(answer, dict) else None
        if reply_id is None:
            # Accepted, yet no id: the reply probably exists, so a retry
            # could post it twice.
            raise ReplyError(
                "unavailable", f"Graph answered {path} without {id_field}", retryable=False
            )
        return ReplyResult(reply_id=reply_id)

    async def _post(self, path: str, token: str, request: Mapping[str, Any]) -> Any:
        url = self.graph_url + path
        try:
            response = await self._client().post(
                url, headers={"Authorization": f"Bearer {token}"}, **request
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ReplyError("unavailable", f"Graph unreachable: {exc!r}", retryable=True) from exc
        except httpx.TransportError as exc:
            # Sent, but no answer: the reply may have been posted.
            raise ReplyError(
                "unavailable",
                f"Graph did not answer (the reply may exist): {exc!r}",
                retryable=True,
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            return body
        error = map_graph_error(response.status_code, body, response.headers)
        log.info("meta: reply %s failed: %s (%s)", path, error.code, error.message)
        raise error

    async def close(self) -> None:
        """Close the HTTP client (safe to call twice: one client serves both platforms)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
