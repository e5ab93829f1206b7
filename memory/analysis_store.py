"""Stored message analyses and their incremental aggregates (docs/analysis.md).

:class:`AnalysisStore` writes the analysis of a message and, in the same
transaction, adds it to the running sums of every aggregate it belongs to
(``analysis_buckets``, migration 0005): hour and day buckets, for the 8
slices made of its persona, user and channel, each either the value or
``*``. A series for any combination of filters is then a range read of the
bucket table's primary key, never a scan of messages.

Storing is idempotent per message: the analysis row is inserted with
``ON CONFLICT DO NOTHING`` and the sums are only added when it was new, so a
job that runs twice (a retry, a worker that died after committing) counts a
message once.

Like :class:`memory.memories.MemoryStore` it opens every transaction through
``Store._tx(tenant_id)``, so on Postgres the row-level security policies of
migration 0005 apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import product
from typing import Any, Literal

from sqlalchemy import delete, func, select

from memory.models import (
    ANY,
    PLUTCHIK_EMOTIONS,
    AnalysisBucket,
    Conversation,
    Message,
    MessageAnalysis,
    aware,
    utcnow,
)
from memory.records import AnalysisBucketRecord, AnalysisRecord
from memory.store import Store

Granularity = Literal["hour", "day"]
GRANULARITIES: tuple[Granularity, ...] = ("hour", "day")
SENTIMENT_FIELDS = ("compound", "pos", "neu", "neg")
_SUM_FIELDS = (*SENTIMENT_FIELDS, *PLUTCHIK_EMOTIONS)
_KEY_COLUMNS = (
    "tenant_id",
    "granularity",
    "persona_key",
    "user_key",
    "channel_key",
    "role",
    "bucket_start",
)


@dataclass(frozen=True)
class MessageContext:
    """A stored message with what its aggregates are keyed by."""

    message_id: str
    tenant_id: str
    conversation_id: str
    role: str
    content: str
    status: str
    created_at: datetime
    persona_id: str
    user_id: str
    channel: str


def bucket_start(moment: datetime, granularity: Granularity) -> datetime:
    """The UTC start of the hour or day that ``moment`` falls in."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity == "day" else moment


def bucket_width(granularity: Granularity) -> timedelta:
    return timedelta(days=1) if granularity == "day" else timedelta(hours=1)


class AnalysisStore:
    """Tenant-scoped reads and writes of message analyses and analytics buckets."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._dialect = store.engine.dialect.name

    def _insert(self, table: Any) -> Any:
        """A dialect ``INSERT`` (with ``on_conflict_do_*``) for SQLite or Postgres."""
        # ON CONFLICT is dialect syntax; SQLAlchemy spells it alike for both.
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    async def message_context(self, tenant_id: str, message_id: str) -> MessageContext | None:
        """The message and its conversation's persona, user and channel; None if gone."""
        async with self.store._tx(tenant_id) as s:
            row = (
                await s.execute(
                    select(Message, Conversation)
                    .join(Conversation, Conversation.id == Message.conversation_id)
                    .where(Message.tenant_id == tenant_id, Message.id == message_id)
                )
            ).one_or_none()
        if row is None:
            return None
        message, conv = row
        return MessageContext(
            message_id=message.id,
            tenant_id=tenant_id,
            conversation_id=conv.id,
            role=message.role,
            content=message.content,
            status=message.status,
            created_at=aware(message.created_at),
            persona_id=conv.persona_id,
            user_id=conv.user_id,
            channel=conv.channel,
        )

    async def save(
        self,
        ctx: MessageContext,
        *,
        sentiment: dict[str, float],
        emotions: dict[str, float],
        language: str | None,
        analyzer: str,
    ) -> AnalysisRecord | None:
        """Store the analysis of ``ctx``'s message and add it to its buckets.

        Returns the record, or None when the message already had one (nothing
        changes then, so aggregates count each message once).
        """
        values = {f: float(sentiment.get(f, 0.0)) for f in SENTIMENT_FIELDS}
        scores = {name: float(emotions.get(name, 0.0)) for name in PLUTCHIK_EMOTIONS}
        now = utcnow()
        async with self.store._tx(ctx.tenant_id) as s:
            inserted = (
                await s.execute(
                    self._insert(MessageAnalysis)
                    .values(
                        message_id=ctx.message_id,
                        tenant_id=ctx.tenant_id,
                        emotions=scores,
                        language=language,
                        analyzer=analyzer,
                        created_at=now,
                        **values,
                    )
                    .on_conflict_do_nothing(index_elements=["message_id"])
                    .returning(MessageAnalysis.message_id)
                )
            ).first()
            if inserted is None:
                return None
            rows = _bucket_rows(ctx, {**values, **scores}, now)
            stmt = self._insert(AnalysisBucket)
            excluded = stmt.excluded
            table = AnalysisBucket.__table__.c
            stmt = stmt.on_conflict_do_update(
                index_elements=list(_KEY_COLUMNS),
                set_={
                    "count": table["count"] + excluded["count"],
                    "updated_at": excluded.updated_at,
                    **{f"sum_{f}": table[f"sum_{f}"] + excluded[f"sum_{f}"] for f in _SUM_FIELDS},
                },
            )
            # One statement per row, in primary-key order: concurrent writers
            # then take the row locks of shared buckets in the same order and
            # cannot deadlock on Postgres.
            for row in rows:
                await s.execute(stmt, row)
        return AnalysisRecord(
            message_id=ctx.message_id,
            compound=values["compound"],
            pos=values["pos"],
            neu=values["neu"],
            neg=values["neg"],
            emotions=scores,
            language=language,
            analyzer=analyzer,
            created_at=now,
        )

    async def get_many(
        self, tenant_id: str, message_ids: Iterable[str]
    ) -> dict[str, AnalysisRecord]:
        """The analyses of these messages that exist, by message id."""
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return {}
        async with self.store._tx(tenant_id) as s:
            rows = (
                await s.execute(
                    select(MessageAnalysis).where(
                        MessageAnalysis.tenant_id == tenant_id,
                        MessageAnalysis.message_id.in_(ids),
                    )
                )
            ).scalars()
            return {r.message_id: _record(r) for r in rows}

    async def get(self, tenant_id: str, message_id: str) -> AnalysisRecord | None:
        return (await self.get_many(tenant_id, [message_id])).get(message_id)

    async def series(
        self,
        tenant_id: str,
        *,
        granularity: Granularity,
        start: datetime,
        end: datetime,
        persona_id: str | None = None,
        user_id: str | None = None,
        channel: str | None = None,
        roles: Sequence[str] = ("user",),
    ) -> list[AnalysisBucketRecord]:
        """Averages per bucket whose start is in [``start``, ``end``), oldest first.

        None for a filter means all of them. Buckets without analyses are left out.
        """
        end = end.astimezone(UTC) if end.tzinfo else end.replace(tzinfo=UTC)
        b = AnalysisBucket
        sums = [func.sum(getattr(b, f"sum_{f}")) for f in _SUM_FIELDS]
        q = (
            select(b.bucket_start, func.sum(b.count), *sums)
            .where(
                b.tenant_id == tenant_id,
                b.granularity == granularity,
                b.persona_key == (persona_id or ANY),
                b.user_key == (user_id or ANY),
                b.channel_key == (channel or ANY),
                b.role.in_(list(roles)),
                b.bucket_start >= bucket_start(start, granularity),
                b.bucket_start < end,
            )
            .group_by(b.bucket_start)
            .order_by(b.bucket_start)
        )
        async with self.store._tx(tenant_id) as s:
            rows = (await s.execute(q)).all()
        out = []
        for row in rows:
            count = int(row[1] or 0)
            if count <= 0:
                continue
            avg = {f: float(v or 0.0) / count for f, v in zip(_SUM_FIELDS, row[2:], strict=True)}
            out.append(
                AnalysisBucketRecord(
                    start=aware(row[0]),
                    count=count,
                    sentiment={f: avg[f] for f in SENTIMENT_FIELDS},
                    emotions={e: avg[e] for e in PLUTCHIK_EMOTIONS},
                )
            )
        return out

    async def forget_user(self, tenant_id: str, user_id: str) -> int:
        """Delete the per-user aggregates of a forgotten user; returns the rows deleted.

        (Their message analyses go with their messages; the persona, channel
        and tenant totals keep the user's contribution as anonymous sums.)
        """
        async with self.store._tx(tenant_id) as s:
            result = await s.execute(
                delete(AnalysisBucket).where(
                    AnalysisBucket.tenant_id == tenant_id, AnalysisBucket.user_key == user_id
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)


def _bucket_rows(
    ctx: MessageContext, values: dict[str, float], now: datetime
) -> list[dict[str, Any]]:
    rows = []
    for granularity, persona, user, channel in product(
        GRANULARITIES, (ctx.persona_id, ANY), (ctx.user_id, ANY), (ctx.channel, ANY)
    ):
        rows.append(
            {
                "tenant_id": ctx.tenant_id,
                "granularity": granularity,
                "persona_key": persona,
                "user_key": user,
                "channel_key": channel,
                "role": ctx.role,
                "bucket_start": bucket_start(ctx.created_at, granularity),
                "count": 1,
                "updated_at": now,
                **{f"sum_{f}": values[f] for f in _SUM_FIELDS},
            }
        )
    rows.sort(key=lambda r: tuple(str(r[c]) for c in _KEY_COLUMNS))
    return rows


def _record(row: MessageAnalysis) -> AnalysisRecord:
    emotions = row.emotions or {}
    return AnalysisRecord(
        message_id=row.message_id,
        compound=row.compound,
        pos=row.pos,
        neu=row.neu,
        neg=row.neg,
        emotions={name: float(emotions.get(name, 0.0)) for name in PLUTCHIK_EMOTIONS},
        language=row.language,
        analyzer=row.analyzer,
        created_at=aware(row.created_at),
    )
