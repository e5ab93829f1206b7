"""A connected account's reply policy (docs/integrations.md, "Policies").

``mode``: ``auto`` (replies go out), ``approval`` (they wait for an
operator), ``off`` (comments are recorded, never answered);
``ignore_keywords``; ``max_replies_per_hour`` (beyond it, replies wait);
``quiet_hours`` (``{start, end, timezone}``: replies wait until the end);
``reply_to_replies`` (answer comments inside threads too). Plus what is never
answered whatever the policy: the account's own comments, empty ones, spam.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from memory.social_store import CommentRecord

MODES = ("auto", "approval", "off")
DEFAULT_POLICY: dict[str, Any] = {
    "mode": "approval",
    "ignore_keywords": [],
    "max_replies_per_hour": 60,
    "quiet_hours": None,  # {"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"}
    "reply_to_replies": True,
}
_URL = re.compile(r"https?://|www\.", re.I)
_SPAM_WORDS = re.compile(
    r"\b(free followers|crypto giveaway|dm me for|check my (bio|profile)|click the link|promo code)\b",
    re.I,
)


def check_policy(data: Any) -> dict[str, Any]:
    """A validated reply policy (defaults for what is missing); raises ValueError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError("'policy' must be an object")
    unknown = set(data) - set(DEFAULT_POLICY)
    if unknown:
        raise ValueError(f"unknown policy fields: {', '.join(sorted(unknown))}")
    policy = {**DEFAULT_POLICY, **data}
    if policy["mode"] not in MODES:
        raise ValueError(f"policy.mode must be one of {', '.join(MODES)}")
    words = policy["ignore_keywords"]
    if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
        raise ValueError("policy.ignore_keywords must be a list of words")
    limit = policy["max_replies_per_hour"]
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= 10_000:
        raise ValueError("policy.max_replies_per_hour must be 0..10000")
    quiet = policy["quiet_hours"]
    if quiet is not None:
        if not isinstance(quiet, dict) or set(quiet) - {"start", "end", "timezone"}:
            raise ValueError("policy.quiet_hours: {start, end, timezone}")
        for key in ("start", "end"):
            if not isinstance(quiet.get(key), str) or not re.fullmatch(r"\d\d:\d\d", quiet[key]):
                raise ValueError(f"policy.quiet_hours.{key} must be HH:MM")
        try:
            ZoneInfo(quiet.get("timezone") or "UTC")
        except Exception as exc:
            raise ValueError(
                "policy.quiet_hours.timezone: an IANA zone such as Europe/Paris"
            ) from exc
    if not isinstance(policy["reply_to_replies"], bool):
        raise ValueError("policy.reply_to_replies must be true or false")
    return policy


def quiet_until(policy: Mapping[str, Any], now: datetime) -> datetime | None:
    """When the account's quiet hours end, if ``now`` is inside them."""
    quiet = policy.get("quiet_hours")
    if not quiet:
        return None
    zone = ZoneInfo(quiet.get("timezone") or "UTC")
    local = now.astimezone(zone)
    start = local.replace(
        hour=int(quiet["start"][:2]), minute=int(quiet["start"][3:]), second=0, microsecond=0
    )
    end = local.replace(
        hour=int(quiet["end"][:2]), minute=int(quiet["end"][3:]), second=0, microsecond=0
    )
    if start <= end:
        inside = start <= local < end
        until = end
    else:  # over midnight: 22:00 - 07:00
        inside = local >= start or local < end
        until = end if local < end else end + timedelta(days=1)
    return until.astimezone(UTC) if inside else None


def why_ignored(comment: CommentRecord, policy: Mapping[str, Any]) -> str | None:
    """The policy's reason not to answer a comment at all, or None."""
    if comment.author_is_account:
        return "own_comment"
    if policy.get("mode") == "off":
        return "policy_off"
    if comment.parent_id and not policy.get("reply_to_replies", True):
        return "reply_in_thread"
    text = comment.text.lower()
    for word in policy.get("ignore_keywords") or []:
        if word.lower() in text:
            return "keyword"
    if not comment.text.strip():
        return "empty"
    if len(_URL.findall(comment.text)) >= 2 or _SPAM_WORDS.search(comment.text):
        return "spam"
    return None


# What each platform accepts in one reply (X counts some characters double: a
# reply near the limit may still be refused, as ``invalid``).
MAX_REPLY_CHARS = {"x": 280, "instagram": 2200, "facebook": 8000, "youtube": 10_000}


def fit_reply(platform: str, text: str) -> str:
    """``text`` cut to the platform's limit at a word boundary, with an ellipsis."""
    limit = MAX_REPLY_CHARS.get(platform, 2000)
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:.-") + "…"
