"""Feeds: the durable tables and queries of RSS ingestion (integrations/rss, docs/feeds.md).

Two tenant-owned tables, created by migration 0007:

- ``feeds``: one subscription of a persona to a feed URL, with what the
  fetcher needs between fetches (validators for conditional requests) and
  what operators need to see (``last_error``, ``last_ok_at``, ``failures``,
  ``next_fetch_at``);
- ``feed_items``: the items seen, one row per (feed, dedupe key), with the
  keyphrases and sentiment computed when the item was first seen.

The tables live in their own module (on :class:`memory.models.Base`, so
Alembic and the schema check see them) and :class:`FeedStore` opens its own
transactions the way :class:`memory.store.Store` does: on Postgres each one
declares its tenant for row-level security, and the only cross-tenant query
(which feeds are due, for the fetcher) opts in to the system scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from memory.ids import new_id
from memory.models import Base, aware, utcnow
from memory.store import Store

URL_MAX = 2000
TITLE_MAX = 500


class Feed(Base):
    """A persona's subscription to one feed URL."""

    __tablename__ = "feeds"
    __table_args__ = (
        UniqueConstraint("tenant_id", "persona_id", "url", name="uq_feeds_persona_url"),
        # The fetcher's query: which feeds are due, across tenants.
        Index("ix_feeds_due", "enabled", "next_fetch_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    persona_id: Mapped[str] = mapped_column(ForeignKey("personas.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(URL_MAX))
    title: Mapped[str | None] = mapped_column(String(TITLE_MAX), nullable=True)
    interval_seconds: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Validators of the last 200 answer, sent back as If-None-Match / If-Modified-Since.
    etag: Mapped[str | None] = mapped_column(String(500), nullable=True)
    last_modified: Mapped[str | None] = mapped_column(String(100), nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_fetch_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_ok_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_fetch_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FeedItem(Base):
    """One item of a feed, stored once per dedupe key (guid, else link, else content hash)."""

    __tablename__ = "feed_items"
    __table_args__ = (
        UniqueConstraint("feed_id", "dedupe_key", name="uq_feed_items_key"),
        # Trends read a persona's items of the last few windows.
        Index("ix_feed_items_persona_at", "tenant_id", "persona_id", "at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    feed_id: Mapped[str] = mapped_column(ForeignKey("feeds.id", ondelete="CASCADE"))
    # Copied from the feed so trend queries need no join.
    persona_id: Mapped[str] = mapped_column(ForeignKey("personas.id", ondelete="CASCADE"))
    dedupe_key: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(String(URL_MAX), nullable=True)
    summary: Mapped[str] = mapped_column(Text)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # When the item counts for trends: its publication time, but never later
    # than when we first saw it (a feed's clock may be ahead of ours).
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    keyphrases: Mapped[list[str]] = mapped_column(JSON, default=list)
    sentiment: Mapped[float] = mapped_column(Float, default=0.0)


@dataclass(frozen=True)
class FeedRecord:
    id: str
    tenant_id: str
    persona_id: str
    url: str
    title: str | None
    interval_seconds: int
    enabled: bool
    etag: str | None
    last_modified: str | None
    last_status: int | None
    last_error: str | None
    last_fetch_at: datetime | None
    last_ok_at: datetime | None
    failures: int
    next_fetch_at: datetime
    created_at: datetime

    def to_public(self) -> dict[str, Any]:
        """The API's view of a feed, status fields included (docs/feeds.md)."""
        if self.last_fetch_at is None:
            status = "pending"
        elif self.failures:
            status = "error"
        else:
            status = "ok"
        return {
            "id": self.id,
            "object": "feed",
            "persona": self.persona_id,
            "url": self.url,
            "title": self.title,
            "interval_seconds": self.interval_seconds,
            "enabled": self.enabled,
            "status": status,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "last_fetch_at": _iso(self.last_fetch_at),
            "last_ok_at": _iso(self.last_ok_at),
            "failures": self.failures,
            "next_fetch_at": _iso(self.next_fetch_at),
            "created_at": _iso(self.created_at),
        }


@dataclass(frozen=True)
class NewItem:
    """An item as parsed and analysed, before it is stored."""

    dedupe_key: str
    title: str
    link: str | None
    summary: str
    published_at: datetime | None
    keyphrases: list[str] = field(default_factory=list)
    sentiment: float = 0.0


@dataclass(frozen=True)
class ItemRecord:
    id: str
    feed_id: str
    persona_id: str
    title: str
    link: str | None
    summary: str
    published_at: datetime | None
    seen_at: datetime
    at: datetime
    keyphrases: list[str]
    sentiment: float

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "feed.item",
            "feed_id": self.feed_id,
            "title": self.title,
            "link": self.link,
            "summary": self.summary,
            "published_at": _iso(self.published_at),
            "seen_at": _iso(self.seen_at),
            "keyphrases": self.keyphrases,
            "sentiment": self.sentiment,
        }


def _iso(value: datetime | None) -> str | None:
    value = aware(value)
    return value.isoformat() if value is not None else None


def _feed(row: Feed) -> FeedRecord:
    return FeedRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        persona_id=row.persona_id,
        url=row.url,
        title=row.title,
        interval_seconds=row.interval_seconds,
        enabled=row.enabled,
        etag=row.etag,
        last_modified=row.last_modified,
        last_status=row.last_status,
        last_error=row.last_error,
        last_fetch_at=aware(row.last_fetch_at),
        last_ok_at=aware(row.last_ok_at),
        failures=row.failures,
        next_fetch_at=aware(row.next_fetch_at) or utcnow(),
        created_at=aware(row.created_at) or utcnow(),
    )


def _item(row: FeedItem) -> ItemRecord:
    return ItemRecord(
        id=row.id,
        feed_id=row.feed_id,
        persona_id=row.persona_id,
        title=row.title,
        link=row.link,
        summary=row.summary,
        published_at=aware(row.published_at),
        seen_at=aware(row.seen_at) or utcnow(),
        at=aware(row.at) or utcnow(),
        keyphrases=list(row.keyphrases or []),
        sentiment=float(row.sentiment or 0.0),
    )


class FeedConflict(Exception):
    """The persona already follows this URL."""


class FeedStore:
    """Tenant-scoped access to ``feeds`` and ``feed_items``."""

    def __init__(self, store: Store) -> None:
        # Transactions come from the main store: the same tenant scoping for
        # Postgres row-level security (memory.store.Store._tx), one engine.
        self._tx = store._tx

    # -- feeds -----------------------------------------------------------------

    async def create_feed(
        self,
        tenant_id: str,
        *,
        persona_id: str,
        url: str,
        interval_seconds: int,
        title: str | None = None,
    ) -> FeedRecord:
        """Subscribe; the first fetch is due at once. A URL followed twice is a conflict."""
        now = utcnow()
        try:
            async with self._tx(tenant_id) as s:
                row = Feed(
                    id=new_id("feed"),
                    tenant_id=tenant_id,
                    persona_id=persona_id,
                    url=url,
                    title=title,
                    interval_seconds=interval_seconds,
                    enabled=True,
                    failures=0,
                    next_fetch_at=now,
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
        except IntegrityError as exc:
            raise FeedConflict(f"this persona already follows {url!r}") from exc
        return _feed(row)

    async def get_feed(self, tenant_id: str, feed_id: str) -> FeedRecord | None:
        async with self._tx(tenant_id) as s:
            row = (
                await s.execute(select(Feed).where(Feed.tenant_id == tenant_id, Feed.id == feed_id))
            ).scalar_one_or_none()
        return _feed(row) if row else None

    async def list_feeds(
        self, tenant_id: str, *, persona_id: str | None = None
    ) -> list[FeedRecord]:
        query = select(Feed).where(Feed.tenant_id == tenant_id)
        if persona_id is not None:
            query = query.where(Feed.persona_id == persona_id)
        async with self._tx(tenant_id) as s:
            rows = (await s.execute(query.order_by(Feed.created_at, Feed.id))).scalars()
            return [_feed(r) for r in rows]

    async def delete_feed(self, tenant_id: str, feed_id: str) -> bool:
        """Unsubscribe; the feed's items go with it (ON DELETE CASCADE)."""
        async with self._tx(tenant_id) as s:
            # Items first: SQLite enforces foreign keys only when asked to.
            await s.execute(
                delete(FeedItem).where(FeedItem.tenant_id == tenant_id, FeedItem.feed_id == feed_id)
            )
            result = await s.execute(
                delete(Feed).where(Feed.tenant_id == tenant_id, Feed.id == feed_id)
            )
        return bool(getattr(result, "rowcount", 0))

    async def due_feeds(self, now: datetime, *, limit: int = 100) -> list[FeedRecord]:
        """Enabled feeds whose next fetch is due, soonest first, across tenants (the fetcher)."""
        async with self._tx(system=True) as s:
            rows = (
                await s.execute(
                    select(Feed)
                    .where(Feed.enabled.is_(True), Feed.next_fetch_at <= now)
                    .order_by(Feed.next_fetch_at)
                    .limit(limit)
                )
            ).scalars()
            return [_feed(r) for r in rows]

    async def record_fetch(
        self,
        tenant_id: str,
        feed_id: str,
        *,
        now: datetime,
        next_fetch_at: datetime,
        status: int | None,
        error: str | None,
        etag: str | None = None,
        last_modified: str | None = None,
        title: str | None = None,
    ) -> FeedRecord | None:
        """Write a fetch's outcome: success (``error`` None) resets ``failures``, failure adds one.

        Validators and title are kept as they were when not given (a 304 carries none).
        """
        values: dict[str, Any] = {
            "last_fetch_at": now,
            "last_status": status,
            "next_fetch_at": next_fetch_at,
            "updated_at": now,
        }
        if error is None:
            values.update(last_ok_at=now, last_error=None, failures=0)
            if etag is not None:
                values["etag"] = etag[:500]
            if last_modified is not None:
                values["last_modified"] = last_modified[:100]
            if title:
                values["title"] = title[:TITLE_MAX]
        else:
            values.update(last_error=error[:2000], failures=Feed.failures + 1)
        async with self._tx(tenant_id) as s:
            await s.execute(
                update(Feed).where(Feed.tenant_id == tenant_id, Feed.id == feed_id).values(**values)
            )
            row = (
                await s.execute(select(Feed).where(Feed.tenant_id == tenant_id, Feed.id == feed_id))
            ).scalar_one_or_none()
        return _feed(row) if row else None

    # -- items -----------------------------------------------------------------

    async def known_keys(self, tenant_id: str, feed_id: str, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` this feed already has (so new items alone get analysed)."""
        if not keys:
            return set()
        async with self._tx(tenant_id) as s:
            rows = await s.execute(
                select(FeedItem.dedupe_key).where(
                    FeedItem.tenant_id == tenant_id,
                    FeedItem.feed_id == feed_id,
                    FeedItem.dedupe_key.in_(list(keys)),
                )
            )
            return {r[0] for r in rows}

    async def add_items(
        self, feed: FeedRecord, items: Sequence[NewItem], *, now: datetime
    ) -> list[ItemRecord]:
        """Store the items this feed does not have yet; return those stored.

        One fetcher holds the feed's lock, so a conflict on the dedupe key
        means a second writer slipped in past an expired lock: the keys are
        read again and the insert retried once with what is still new.
        """
        fresh: dict[str, NewItem] = {}
        for item in items:
            fresh.setdefault(item.dedupe_key, item)  # a key repeated within one document
        for attempt in range(2):
            known = await self.known_keys(feed.tenant_id, feed.id, list(fresh))
            rows = [
                self._item_row(feed, item, now) for key, item in fresh.items() if key not in known
            ]
            if not rows:
                return []
            try:
                async with self._tx(feed.tenant_id) as s:
                    s.add_all(rows)
            except IntegrityError:
                if attempt:
                    return []  # the other writer stored them: nothing is lost
                continue
            return [_item(r) for r in rows]
        return []

    @staticmethod
    def _item_row(feed: FeedRecord, item: NewItem, now: datetime) -> FeedItem:
        return FeedItem(
            id=new_id("fitem"),
            tenant_id=feed.tenant_id,
            feed_id=feed.id,
            persona_id=feed.persona_id,
            dedupe_key=item.dedupe_key,
            title=item.title,
            link=item.link[:URL_MAX] if item.link else None,
            summary=item.summary,
            published_at=item.published_at,
            seen_at=now,
            at=min(item.published_at, now) if item.published_at else now,
            keyphrases=list(item.keyphrases),
            sentiment=float(item.sentiment),
        )

    async def items_since(
        self, tenant_id: str, persona_id: str, since: datetime, *, limit: int = 5000
    ) -> list[ItemRecord]:
        """A persona's items that count for trends from ``since`` on, newest first."""
        async with self._tx(tenant_id) as s:
            rows = (
                await s.execute(
                    select(FeedItem)
                    .where(
                        FeedItem.tenant_id == tenant_id,
                        FeedItem.persona_id == persona_id,
                        FeedItem.at >= since,
                    )
                    .order_by(FeedItem.at.desc())
                    .limit(limit)
                )
            ).scalars()
            return [_item(r) for r in rows]

    async def list_items(
        self, tenant_id: str, feed_id: str, *, limit: int = 50
    ) -> list[ItemRecord]:
        """A feed's items, the most recently seen first."""
        async with self._tx(tenant_id) as s:
            rows = (
                await s.execute(
                    select(FeedItem)
                    .where(FeedItem.tenant_id == tenant_id, FeedItem.feed_id == feed_id)
                    .order_by(FeedItem.seen_at.desc(), FeedItem.id.desc())
                    .limit(limit)
                )
            ).scalars()
            return [_item(r) for r in rows]

    async def count_items(self, tenant_id: str, feed_id: str) -> int:
        async with self._tx(tenant_id) as s:
            return int(
                (
                    await s.execute(
                        select(func.count())
                        .select_from(FeedItem)
                        .where(FeedItem.tenant_id == tenant_id, FeedItem.feed_id == feed_id)
                    )
                ).scalar_one()
            )

    async def prune_items(self, seen_before: datetime) -> int:
        """Forget items first seen before ``seen_before``, across tenants (retention)."""
        async with self._tx(system=True) as s:
            result = await s.execute(delete(FeedItem).where(FeedItem.seen_at < seen_before))
        return int(getattr(result, "rowcount", 0) or 0)
