"""Feed documents to items: feedparser for RSS 0.9x/1.0/2.0 and Atom, then plain text.

feedparser is lenient: it recovers entries from many broken documents and
flags them (``bozo``). A document from which nothing can be recovered (an
HTML error page, truncated XML, binary garbage) is a :class:`ParseError`,
which the fetcher reports on the feed like a failed fetch.
"""

from __future__ import annotations

import calendar
import hashlib
import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import feedparser

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
SUMMARY_MAX = 2000
TITLE_MAX = 500


class ParseError(Exception):
    """The document is not a feed we can read."""


@dataclass(frozen=True)
class ParsedItem:
    dedupe_key: str
    title: str
    link: str | None
    summary: str
    published_at: datetime | None


@dataclass(frozen=True)
class ParsedFeed:
    title: str | None
    items: list[ParsedItem]
    # feedparser recovered the items from a malformed document.
    malformed: bool = False


def plain_text(value: str | None, limit: int) -> str:
    """HTML (as feeds carry in titles and summaries) to one line of text, at most ``limit``."""
    if not value:
        return ""
    text = html.unescape(_TAG.sub(" ", value))
    text = _SPACE.sub(" ", text).strip()
    return text[:limit]


def dedupe_key(entry: Any, title: str, summary: str) -> str:
    """The item's identity across fetches: its guid, else its link, else its content.

    Hashed so that any guid fits the column; the prefix keeps a guid that
    happens to equal another item's link from colliding with it.
    """
    guid = entry.get("id") or entry.get("guid")
    link = entry.get("link")
    if guid:
        basis = "guid:" + str(guid).strip()
    elif link:
        basis = "link:" + str(link).strip()
    else:
        basis = "text:" + title + "\n" + summary
    return hashlib.sha256(basis.encode("utf-8", "replace")).hexdigest()


def _published(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = entry.get(key)
        if parsed:
            try:
                # feedparser gives a UTC struct_time; timegm does not apply local time.
                return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
            except (OverflowError, ValueError, OSError):
                continue
    return None


def parse_feed(body: bytes, *, content_type: str | None = None, max_items: int = 200) -> ParsedFeed:
    """Parse one fetched document. Raises :class:`ParseError` when it is not a feed."""
    headers = {"content-type": content_type} if content_type else None
    # Bytes, not a URL: feedparser must never fetch anything itself.
    doc = feedparser.parse(body, response_headers=headers, sanitize_html=False)
    entries = list(doc.get("entries") or [])
    feed_info = doc.get("feed") or {}
    version = doc.get("version") or ""
    if not entries and not version:
        reason = doc.get("bozo_exception")
        detail = f": {reason}" if reason else ""
        raise ParseError(f"not an RSS or Atom feed{detail}"[:500])
    items: list[ParsedItem] = []
    for entry in entries[:max_items]:
        title = plain_text(entry.get("title"), TITLE_MAX)
        summary = plain_text(entry.get("summary") or entry.get("description"), SUMMARY_MAX)
        if not title and not summary:
            continue  # nothing to talk about
        link = entry.get("link")
        link = str(link).strip() if link else None
        if link and not link.lower().startswith(("http://", "https://")):
            link = None  # a javascript: or data: link is never shown to anyone
        items.append(
            ParsedItem(
                dedupe_key=dedupe_key(entry, title, summary),
                title=title or summary[:120],
                link=link,
                summary=summary,
                published_at=_published(entry),
            )
        )
    feed_title = plain_text(feed_info.get("title"), TITLE_MAX) or None
    return ParsedFeed(title=feed_title, items=items, malformed=bool(doc.get("bozo")))
