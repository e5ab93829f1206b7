"""A fake X API (``POST /2/tweets``) on loopback, and signed Account Activity deliveries.

The server speaks X API v2's wire format: ``201 {"data": {"id", "text",
"edit_history_tweet_ids"}}`` on success; problem bodies ``{"title",
"detail", "type", "status"}`` (and ``{"errors": [...]}`` for validation);
``x-rate-limit-*`` headers; a bearer token required. Like the real API it
refuses a second identical tweet by the same user (403 duplicate content)
and a reply to a deleted tweet (403). Every request is recorded in
:attr:`FakeX.calls`; :meth:`FakeX.fail_next` programs failures (429 with
``x-rate-limit-reset``, 500, 401, 403, ...), answered in order, and
:meth:`FakeX.stall_next` holds a request past a client's timeout.

The delivery builders follow the payload examples of X's "Account Activity
data objects" guide (``for_user_id`` + ``tweet_create_events`` of v1.1
Tweet objects, ``favorite_events``, ``follow_events``,
``direct_message_events``), and :func:`signed_delivery` signs them the way
X does: ``x-twitter-webhooks-signature: sha256=<base64 HMAC-SHA256 of the
body, keyed with the consumer secret>``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer

ACCOUNT_ID = "2244994945"  # the subscribed account of X's documentation examples
ACCOUNT_NAME = "XDevelopers"

DUPLICATE = "You are not allowed to create a Tweet with duplicate content."
DELETED = "You attempted to reply to a Tweet that is deleted or not visible to you."
_ids = itertools.count(1_850_000_000_000_000_001)


def next_id() -> str:
    """A fresh snowflake-like tweet id."""
    return str(next(_ids))


# -- the API -----------------------------------------------------------------------


@dataclass
class TweetCall:
    """One ``POST /2/tweets`` as the fake received it."""

    token: str | None
    text: str | None
    in_reply_to: str | None
    body: Any
    status: int = 0  # what the fake answered


@dataclass
class Failure:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def problem(status: int, title: str, detail: str) -> dict[str, Any]:
    """X API v2's problem body."""
    return {"title": title, "detail": detail, "type": "about:blank", "status": status}


class FakeX(LoopbackServer):
    """``POST /2/tweets``; ``tokens``: the accepted user tokens (``None``: any)."""

    def __init__(self, tokens: set[str] | None = None) -> None:
        self.tokens = tokens
        self.calls: list[TweetCall] = []
        self.posted: dict[str, dict[str, Any]] = {}  # tweet id -> {"token", "text", "reply"}
        self.deleted: set[str] = set()  # tweet ids that replies are refused to
        self._failures: list[Failure] = []
        self._stall = 0.0
        super().__init__(Starlette(routes=[Route("/2/tweets", self._create, methods=["POST"])]))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Forget calls, tweets and programmed failures."""
        self.calls.clear()
        self.posted.clear()
        self.deleted.clear()
        self._failures.clear()
        self._stall = 0.0

    def fail_next(
        self,
        status: int,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` (after the auth check)."""
        titles = {
            401: "Unauthorized",
            403: "Forbidden",
            404: "Not Found",
            429: "Too Many Requests",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }
        title = titles.get(status, "Error")
        failure = Failure(status, problem(status, title, detail or title), dict(headers or {}))
        self._failures.extend([failure] * times)

    def rate_limit_next(self, reset: int, *, times: int = 1) -> None:
        """429 with the 15-minute window exhausted until ``reset`` (epoch seconds)."""
        headers = {
            "x-rate-limit-limit": "200",
            "x-rate-limit-remaining": "0",
            "x-rate-limit-reset": str(reset),
        }
        self.fail_next(429, "Too Many Requests", headers=headers, times=times)

    def stall_next(self, seconds: float) -> None:
        """Hold the next request ``seconds`` before answering it (a client timeout)."""
        self._stall = seconds

    async def _create(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        if self._stall:
            # Like X, the tweet is still created after the client gave up.
            stall, self._stall = self._stall, 0.0
            await asyncio.sleep(stall)
        reply = body.get("reply") if isinstance(body, dict) else None
        call = TweetCall(
            token=token,
            text=body.get("text") if isinstance(body, dict) else None,
            in_reply_to=reply.get("in_reply_to_tweet_id") if isinstance(reply, dict) else None,
            body=body,
        )
        self.calls.append(call)
        response = self._answer(call, reply)
        call.status = response.status_code
        return response

    def _answer(self, call: TweetCall, reply: Any) -> Response:
        if call.token is None or (self.tokens is not None and call.token not in self.tokens):
            return JSONResponse(problem(401, "Unauthorized", "Unauthorized"), 401)
        if self._failures:
            failure = self._failures.pop(0)
            return JSONResponse(failure.body, failure.status, headers=failure.headers)
        if not isinstance(call.text, str) or (reply is not None and not call.in_reply_to):
            invalid = {
                "errors": [{"message": "$.text: is missing but it is required"}],
                "title": "Invalid Request",
                "detail": "One or more parameters to your request was invalid.",
                "type": "https://api.twitter.com/2/problems/invalid-request",
            }
            return JSONResponse(invalid, 400)
        if call.in_reply_to in self.deleted:
            return JSONResponse(problem(403, "Forbidden", DELETED), 403)
        if any(t["token"] == call.token and t["text"] == call.text for t in self.posted.values()):
            return JSONResponse(problem(403, "Forbidden", DUPLICATE), 403)
        tweet_id = next_id()
        self.posted[tweet_id] = {"token": call.token, "text": call.text, "reply": call.in_reply_to}
        data = {"edit_history_tweet_ids": [tweet_id], "id": tweet_id, "text": call.text}
        headers = {
            "x-rate-limit-limit": "200",
            "x-rate-limit-remaining": "199",
            "x-rate-limit-reset": str(int(time.time()) + 900),
        }
        return JSONResponse({"data": data}, 201, headers=headers)


# -- Account Activity deliveries ---------------------------------------------------


def signed_delivery(
    payload: dict[str, Any] | bytes, consumer_secret: str
) -> tuple[bytes, dict[str, str]]:
    """The body X would POST and its headers, signed with ``consumer_secret``."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    digest = hmac.new(consumer_secret.encode(), raw, hashlib.sha256).digest()
    headers = {
        "content-type": "application/json; charset=utf-8",
        "x-twitter-webhooks-signature": "sha256=" + base64.b64encode(digest).decode(),
    }
    return raw, headers


def created_at(when: datetime) -> str:
    """v1.1's ``created_at``: ``Wed Oct 10 20:19:24 +0000 2018``."""
    return when.astimezone(UTC).strftime("%a %b %d %H:%M:%S +0000 %Y")


def sample_user(user_id: str, screen_name: str, name: str | None = None) -> dict[str, Any]:
    """A v1.1 User object as Account Activity embeds it."""
    return {
        "id": int(user_id),
        "id_str": user_id,
        "name": name or screen_name,
        "screen_name": screen_name,
        "location": None,
        "url": None,
        "description": "",
        "protected": False,
        "verified": False,
        "followers_count": 10,
        "friends_count": 20,
        "listed_count": 0,
        "favourites_count": 3,
        "statuses_count": 42,
        "created_at": "Mon Nov 29 21:18:15 +0000 2010",
        "utc_offset": None,
        "time_zone": None,
        "geo_enabled": False,
        "lang": None,
        "profile_image_url_https": "https://pbs.twimg.com/profile_images/0/x_normal.jpg",
        "default_profile": True,
        "default_profile_image": False,
    }


ACCOUNT = sample_user(ACCOUNT_ID, ACCOUNT_NAME, "Developers")
FAN = sample_user("6253282", "fan_of_salon", "A Fan")


def _mention_entities(text: str, mentions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for mentioned in mentions:
        start = text.find("@" + mentioned["screen_name"])
        if start < 0:
            continue
        out.append(
            {
                "screen_name": mentioned["screen_name"],
                "name": mentioned["name"],
                "id": mentioned["id"],
                "id_str": mentioned["id_str"],
                "indices": [start, start + 1 + len(mentioned["screen_name"])],
            }
        )
    return out


def _entities(mentions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"hashtags": [], "urls": [], "user_mentions": mentions, "symbols": []}


def sample_tweet(
    text: str,
    *,
    user: dict[str, Any] = FAN,
    tweet_id: str | None = None,
    in_reply_to: dict[str, Any] | None = None,
    in_reply_to_status_id: str | None = None,
    mentions: Sequence[dict[str, Any]] = (),
    when: datetime | None = None,
) -> dict[str, Any]:
    """A v1.1 Tweet object (``in_reply_to``: the user replied to).

    A text over 140 characters is delivered the way X's compatibility mode
    does: ``text`` truncated (``truncated: true``, entities of the shown
    part only) and the whole tweet in ``extended_tweet``.
    """
    tweet_id = tweet_id or next_id()
    when = when or datetime.now(UTC)
    long = len(text) > 140
    shown = text[:139] + "\u2026" if long else text
    tweet: dict[str, Any] = {
        "created_at": created_at(when),
        "id": int(tweet_id),
        "id_str": tweet_id,
        "text": shown,
        "source": '<a href="https://mobile.twitter.com" rel="nofollow">Twitter Web App</a>',
        "truncated": long,
        "in_reply_to_status_id": int(in_reply_to_status_id) if in_reply_to_status_id else None,
        "in_reply_to_status_id_str": in_reply_to_status_id,
        "in_reply_to_user_id": in_reply_to["id"] if in_reply_to else None,
        "in_reply_to_user_id_str": in_reply_to["id_str"] if in_reply_to else None,
        "in_reply_to_screen_name": in_reply_to["screen_name"] if in_reply_to else None,
        "user": user,
        "geo": None,
        "coordinates": None,
        "place": None,
        "contributors": None,
        "is_quote_status": False,
        "quote_count": 0,
        "reply_count": 0,
        "retweet_count": 0,
        "favorite_count": 0,
        "entities": _entities(_mention_entities(shown[:139], mentions)),
        "favorited": False,
        "retweeted": False,
        "filter_level": "low",
        "lang": "en",
        "timestamp_ms": str(int(when.timestamp() * 1000)),
    }
    if long:
        tweet["extended_tweet"] = {
            "full_text": text,
            "display_text_range": [0, len(text)],
            "entities": _entities(_mention_entities(text, mentions)),
        }
    return tweet


def tweet_delivery(
    tweets: list[dict[str, Any]], *, for_user_id: str = ACCOUNT_ID, **extra: Any
) -> dict[str, Any]:
    """``{"for_user_id", "tweet_create_events": [...]}`` (``extra``: ``user_has_blocked``...)."""
    return {"for_user_id": for_user_id, **extra, "tweet_create_events": tweets}


def reply_to_account(text: str, **kwargs: Any) -> dict[str, Any]:
    """A fan's reply to one of the account's tweets."""
    parent = kwargs.pop("in_reply_to_status_id", None) or next_id()
    return sample_tweet(
        f"@{ACCOUNT_NAME} {text}",
        in_reply_to=ACCOUNT,
        in_reply_to_status_id=parent,
        mentions=[ACCOUNT],
        **kwargs,
    )


def mention_of_account(text: str, **kwargs: Any) -> dict[str, Any]:
    """A fan's own tweet that @mentions the account."""
    return sample_tweet(f"{text} @{ACCOUNT_NAME}", mentions=[ACCOUNT], **kwargs)


def retweet_of_account(original: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fan's retweet of the account's tweet (``retweeted_status`` set)."""
    original = original or sample_tweet("Big news today", user=ACCOUNT)
    tweet = sample_tweet(f"RT @{ACCOUNT_NAME}: {original['text']}", mentions=[ACCOUNT])
    tweet["retweeted_status"] = original
    return tweet


def own_reply(text: str, in_reply_to_status_id: str) -> dict[str, Any]:
    """The account's own reply to a fan (what an answer echoes back as)."""
    return sample_tweet(
        f"@{FAN['screen_name']} {text}",
        user=ACCOUNT,
        in_reply_to=FAN,
        in_reply_to_status_id=in_reply_to_status_id,
        mentions=[FAN],
    )


def favorite_delivery(*, for_user_id: str = ACCOUNT_ID) -> dict[str, Any]:
    """A fan liked one of the account's tweets (``favorite_events``)."""
    now = datetime.now(UTC)
    return {
        "for_user_id": for_user_id,
        "favorite_events": [
            {
                "id": "a7ba59eab0bfcba386f7acedac279542",
                "created_at": created_at(now),
                "timestamp_ms": int(now.timestamp() * 1000),
                "favorited_status": sample_tweet("Big news today", user=ACCOUNT),
                "user": FAN,
            }
        ],
    }


def follow_delivery(*, for_user_id: str = ACCOUNT_ID) -> dict[str, Any]:
    """A fan followed the account (``follow_events``)."""
    return {
        "for_user_id": for_user_id,
        "follow_events": [
            {
                "type": "follow",
                "created_timestamp": str(int(time.time() * 1000)),
                "target": ACCOUNT,
                "source": FAN,
            }
        ],
    }


def direct_message_delivery(text: str, *, for_user_id: str = ACCOUNT_ID) -> dict[str, Any]:
    """A DM to the account (``direct_message_events``; not a comment)."""
    return {
        "for_user_id": for_user_id,
        "direct_message_events": [
            {
                "type": "message_create",
                "id": "954491830116155396",
                "created_timestamp": str(int(time.time() * 1000)),
                "message_create": {
                    "target": {"recipient_id": ACCOUNT_ID},
                    "sender_id": FAN["id_str"],
                    "message_data": {"text": text, "entities": {}},
                },
            }
        ],
        "users": {ACCOUNT_ID: ACCOUNT, FAN["id_str"]: FAN},
    }
