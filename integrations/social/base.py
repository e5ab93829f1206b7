"""What every social platform module shares: comments in, replies out (docs/integrations.md).

One module per platform (integrations/social/meta.py, x.py, youtube.py)
implements the small bases here over plain values; the comment pipeline
(integrations/social/service.py) knows platforms only through them:

- :class:`WebhookReceiver`: a platform that pushes (Meta, X): answer its
  verification challenge, check a delivery's signature on the *raw bytes*
  in constant time *before* parsing, refuse stale signed timestamps, and
  turn the body into :class:`InboundComment` values.
- :class:`CommentPoller`: a platform that must be asked (YouTube): fetch the
  comments newer than a saved cursor, within a quota.
- :class:`ReplyClient`: post a reply to one comment, idempotently, mapping
  the platform's errors to :class:`ReplyError` (retry or give up).

Nothing here knows tenants, personas or the database.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PLATFORMS = ("instagram", "facebook", "x", "youtube")


@dataclass(frozen=True)
class InboundComment:
    """One comment addressed to a connected account, as the platform sent it.

    ``account_id``: the platform id of the connected account the comment is
    for (an Instagram business account, a Facebook Page, an X user, a
    YouTube channel): how it is routed to a tenant and persona.
    ``comment_id``: the platform's id of the comment (deduplication key, and
    what a reply answers). ``author_is_account``: the account itself wrote it
    (its own replies echo back through webhooks: never answered).
    ``post_id``: the media, post, tweet or video commented on; ``parent_id``:
    the comment this one answers, if any. ``kind``: ``comment``,
    ``live_comment``, ``reply`` or ``mention``. ``raw``: the item's own
    payload, kept in the delivery log.
    """

    platform: str
    account_id: str
    comment_id: str
    text: str
    author_id: str
    author_name: str = ""
    author_is_account: bool = False
    post_id: str | None = None
    parent_id: str | None = None
    created_at: datetime | None = None
    kind: str = "comment"
    raw: dict[str, Any] = field(default_factory=dict)


class WebhookError(Exception):
    """A delivery that is refused; nothing of it is processed.

    ``code``: ``bad_signature`` (401), ``stale`` (a signed timestamp too old:
    a replay; 401), ``malformed`` (400), ``verification_failed`` (a challenge
    with the wrong token; 403).
    """

    STATUS = {"bad_signature": 401, "stale": 401, "malformed": 400, "verification_failed": 403}

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return self.STATUS.get(self.code, 400)


@dataclass(frozen=True)
class ChallengeAnswer:
    """What to answer a platform's verification request with."""

    body: str
    media_type: str = "text/plain"


class WebhookReceiver(ABC):
    """A platform that pushes comments to ``/v1/webhooks/<name>``."""

    name: str  # "meta", "x": the endpoint's last segment

    @abstractmethod
    def challenge(self, query: Mapping[str, str], secrets: Mapping[str, str]) -> ChallengeAnswer:
        """Answer the platform's GET verification (raise ``WebhookError`` if it fails)."""

    @abstractmethod
    def verify(
        self, raw: bytes, headers: Mapping[str, str], secrets: Mapping[str, str], now: datetime
    ) -> None:
        """Check the delivery's signature over ``raw`` (constant time) and its freshness.

        ``secrets``: the candidate secrets by name (the deployment-wide app
        and the tenants' own apps); a signature made with any of them passes.
        Raises :class:`WebhookError` ``bad_signature`` or ``stale``.
        """

    @abstractmethod
    def parse(self, raw: bytes) -> list[InboundComment]:
        """The comments in a verified delivery (other events are skipped, not errors).

        Raises :class:`WebhookError` ``malformed`` for a body that is not the
        platform's format at all.
        """

    def delivery_id(self, raw: bytes, headers: Mapping[str, str]) -> str | None:
        """A platform's own id of the delivery, if it sends one (else comments dedupe alone)."""
        return None


@dataclass(frozen=True)
class PollResult:
    """One poll of a :class:`CommentPoller`."""

    comments: list[InboundComment]
    cursor: dict[str, Any]  # saved and given back to the next poll
    quota_used: int = 0  # platform quota units spent
    retry_after: float | None = None  # the platform asked to slow down (seconds)


class CommentPoller(ABC):
    """A platform with no comment webhook: asked on a schedule."""

    name: str

    @abstractmethod
    async def poll(
        self, credentials: Mapping[str, Any], account_id: str, cursor: Mapping[str, Any]
    ) -> PollResult:
        """Comments newer than ``cursor`` on the account's watched posts."""

    async def close(self) -> None:
        """Release HTTP clients."""


@dataclass(frozen=True)
class ReplyResult:
    """A reply the platform accepted."""

    reply_id: str


class ReplyError(Exception):
    """A reply the platform did not take.

    ``code``: ``rate_limited``, ``unauthorized`` (credentials revoked or
    wrong), ``forbidden`` (missing permission), ``not_found`` (the comment is
    gone), ``invalid`` (the text was refused), ``unavailable`` (5xx, network,
    timeout). ``retryable``: worth another attempt later (``retry_after``
    seconds when the platform said).
    """

    def __init__(
        self, code: str, message: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


class ReplyClient(ABC):
    """Posts replies to comments on one platform."""

    platform: str

    @abstractmethod
    async def reply(
        self,
        credentials: Mapping[str, Any],
        comment: InboundComment,
        text: str,
        *,
        idempotency_key: str,
    ) -> ReplyResult:
        """Reply to ``comment`` with ``text``; raises :class:`ReplyError`.

        ``idempotency_key`` is stable across retries of one reply; platforms
        without an idempotency mechanism are protected by the caller (a reply
        is posted at most once per key, recorded before the call returns).
        """

    async def close(self) -> None:
        """Release HTTP clients."""
