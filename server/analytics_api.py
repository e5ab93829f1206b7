"""``/v1/analytics``: sentiment and emotions over time (docs/analysis.md).

``GET /v1/analytics/sentiment`` and ``GET /v1/analytics/emotions`` return a
series of hour or day buckets for the tenant of the API key, optionally for
one persona, one user and/or one channel, read from the incremental
aggregates of memory/analysis_store.py (never from the messages). Tenant API
keys only: a series over many people is an operator's view.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from agents.analysis.topics import top_topics
from memory.analysis_store import GRANULARITIES, Granularity, bucket_start, bucket_width
from memory.console_store import user_texts
from memory.records import AnalysisBucketRecord
from server.http_util import HTTPError, query_int, require_principal, state_of

ROLES = {"user": ("user",), "assistant": ("assistant",), "all": ("user", "assistant")}
# Default span of a series when ``from`` is not given.
DEFAULT_SPAN = {"hour": timedelta(hours=48), "day": timedelta(days=30)}
MAX_BUCKETS = 2000
TOPIC_MESSAGES = 2000  # the newest messages of the range that topics are read from


def _analysis_service(request: Request) -> Any:
    service = state_of(request).extensions.analysis
    if service is None:
        raise HTTPError(404, "analysis_disabled", "analysis is disabled (SALON_ANALYSIS_ENABLED)")
    return service


def _time(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(value.replace(" ", "+"))  # a '+' that was not %2B
    except ValueError as exc:
        raise HTTPError(
            400, "invalid_request", f"'{name}' must be an ISO 8601 date or time"
        ) from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class _Filters:
    """What a series request asks for, validated, with persona and user resolved."""

    tenant_id: str
    bucket: Granularity
    start: datetime
    end: datetime
    persona_id: str | None
    user: str | None
    user_id: str | None
    channel: str | None
    role: str

    def head(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "from": bucket_start(self.start, self.bucket).isoformat(),
            "to": self.end.isoformat(),
            "filters": {
                "persona": self.persona_id,
                "user": self.user,
                "channel": self.channel,
                "role": self.role,
            },
        }

    async def series(self, service: Any, roles: tuple[str, ...]) -> list[AnalysisBucketRecord]:
        points: list[AnalysisBucketRecord] = await service.analyses.series(
            self.tenant_id,
            granularity=self.bucket,
            start=self.start,
            end=self.end,
            persona_id=self.persona_id,
            user_id=self.user_id,
            channel=self.channel,
            roles=roles,
        )
        return points


async def _filters(request: Request) -> _Filters:
    principal = await require_principal(request, api_key_only=True)
    store = state_of(request).store
    q = request.query_params
    granularity = q.get("bucket", "day")
    if granularity not in GRANULARITIES:
        raise HTTPError(400, "invalid_request", "bucket must be 'hour' or 'day'")
    bucket: Granularity = "hour" if granularity == "hour" else "day"
    role = q.get("role", "user")
    if role not in ROLES:
        raise HTTPError(400, "invalid_request", "role must be 'user', 'assistant' or 'all'")
    end = _time(q.get("to"), "to") or datetime.now(UTC)
    start = _time(q.get("from"), "from") or end - DEFAULT_SPAN[bucket]
    if start >= end:
        raise HTTPError(400, "invalid_request", "'from' must be before 'to'")
    if (end - bucket_start(start, bucket)) / bucket_width(bucket) > MAX_BUCKETS:
        raise HTTPError(
            400, "invalid_request", f"at most {MAX_BUCKETS} buckets per request; narrow from/to"
        )
    persona_id = user_id = None
    if persona := q.get("persona"):
        record = await store.get_persona(principal.tenant_id, persona)
        if record is None:
            raise HTTPError(404, "unknown_persona", f"no persona {persona!r}")
        persona_id = record.id
    if user := q.get("user"):
        found = await store.find_user(principal.tenant_id, user)
        if found is None:
            raise HTTPError(404, "user_not_found", f"no user {user!r}")
        user_id = found.id
    return _Filters(
        principal.tenant_id,
        bucket,
        start,
        end,
        persona_id,
        user or None,
        user_id,
        q.get("channel") or None,
        role,
    )


async def _query(request: Request) -> tuple[dict[str, Any], list[AnalysisBucketRecord]]:
    filters = await _filters(request)
    service = _analysis_service(request)
    return filters.head(), await filters.series(service, ROLES[filters.role])


def _summary(points: list[AnalysisBucketRecord]) -> AnalysisBucketRecord | None:
    """The whole range as one bucket: averages weighted by each bucket's count."""
    total = sum(p.count for p in points)
    if not total:
        return None

    def mean(values: list[tuple[dict[str, float], int]]) -> dict[str, float]:
        keys = values[0][0].keys()
        return {k: sum(v[k] * n for v, n in values) / total for k in keys}

    return AnalysisBucketRecord(
        start=points[0].start,
        count=total,
        sentiment=mean([(p.sentiment, p.count) for p in points]),
        emotions=mean([(p.emotions, p.count) for p in points]),
    )


def _respond(
    head: dict[str, Any], points: list[AnalysisBucketRecord], *, sentiment: bool
) -> JSONResponse:
    summary = _summary(points)
    overall = None
    if summary is not None:
        overall = summary.to_public(sentiment=sentiment, emotions=not sentiment)
        overall.pop("start")
    return JSONResponse(
        {
            **head,
            "data": [p.to_public(sentiment=sentiment, emotions=not sentiment) for p in points],
            "overall": overall,
        }
    )


async def sentiment_series(request: Request) -> Response:
    """Average VADER-style sentiment per bucket: ``{start, count, sentiment}``."""
    head, points = await _query(request)
    return _respond(head, points, sentiment=True)


async def emotion_series(request: Request) -> Response:
    """Average Plutchik emotion scores per bucket: ``{start, count, emotions}``."""
    head, points = await _query(request)
    return _respond(head, points, sentiment=False)


async def message_analysis(request: Request) -> Response:
    """The analysis of one message (404 until it is ready)."""
    principal = await require_principal(request, api_key_only=True)
    service = _analysis_service(request)
    message_id = request.path_params["message_id"]
    record = await service.analyses.get(principal.tenant_id, message_id)
    if record is None:
        raise HTTPError(404, "analysis_not_found", f"no analysis of message {message_id!r}")
    return JSONResponse({"message_id": message_id, "analysis": record.to_public()})


async def volume_series(request: Request) -> Response:
    """Messages per bucket, people's and the personas': ``{start, user, assistant}``.

    Counted from the analysis aggregates (every stored message is analysed), so
    this reads a few rows per bucket, never the messages.
    """
    filters = await _filters(request)
    service = _analysis_service(request)
    counts: dict[str, dict[str, int]] = {}
    for role in ("user", "assistant"):
        for p in await filters.series(service, (role,)):
            counts.setdefault(p.start.isoformat(), {"user": 0, "assistant": 0})[role] = p.count
    head = filters.head()
    head["filters"].pop("role")
    return JSONResponse({**head, "data": [{"start": k, **counts[k]} for k in sorted(counts)]})


async def topics(request: Request) -> Response:
    """What people talk about most: ``{topic, count}`` over the range (``?limit=`` 1..50)."""
    filters = await _filters(request)
    _analysis_service(request)  # 404 when analysis is off, like the other series
    limit = query_int(request, "limit", 10, 1, 50)
    texts = await user_texts(
        state_of(request).store,
        filters.tenant_id,
        start=bucket_start(filters.start, filters.bucket),
        end=filters.end,
        persona_id=filters.persona_id,
        limit=TOPIC_MESSAGES,
    )
    found = await asyncio.to_thread(top_topics, texts, limit=limit)
    head = filters.head()
    return JSONResponse(
        {"from": head["from"], "to": head["to"], "messages": len(texts), "data": found}
    )


routes: list[BaseRoute] = [
    Route("/v1/analytics/volume", volume_series, methods=["GET"]),
    Route("/v1/analytics/topics", topics, methods=["GET"]),
    Route("/v1/analytics/sentiment", sentiment_series, methods=["GET"]),
    Route("/v1/analytics/emotions", emotion_series, methods=["GET"]),
    Route("/v1/analytics/messages/{message_id}", message_analysis, methods=["GET"]),
]
