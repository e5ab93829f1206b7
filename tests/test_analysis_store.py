"""Stored analyses and incremental aggregates, on every database backend (SQLite, Postgres).

The Postgres runs use the non-superuser app role of tests/services_pg.py, so
row-level security is live for every test here.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from agents.analysis import (
    AnalysisService,
    AnalysisSettings,
    build_service,
    register_analysis_jobs,
)
from agents.analysis.base import EMOTIONS, Analysis, Analyzer, Sentiment
from agents.analysis.service import EVENT_TYPE, JOB_KIND, job_id_for
from agents.sessions import Session
from media.jobs.inprocess import InProcessJobRunner
from memory.analysis_store import AnalysisStore, MessageContext, bucket_start
from memory.db import create_engine, normalize_database_url
from memory.eventlog import InProcessEventLog
from memory.migrate import migrate
from memory.records import ConversationRecord
from memory.store import Store
from tests.test_store_contract import STORE_BACKENDS

T0 = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)


@pytest.fixture(params=list(STORE_BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_BACKENDS[request.param](request, tmp_path) as s:
        yield s


@dataclasses.dataclass
class Tenant:
    id: str
    persona_id: str
    user_id: str
    conv: ConversationRecord


async def _tenant(store: Store, label: str, *, channel: str = "ws") -> Tenant:
    tenant = await store.create_tenant(label)
    persona = await store.create_persona(tenant.id, slug="p", name="P", data={})
    user = await store.get_or_create_user(tenant.id, f"ext-{label}")
    conv = await store.create_conversation(
        tenant.id, persona_id=persona.id, user_id=user.id, channel=channel
    )
    return Tenant(tenant.id, persona.id, user.id, conv)


async def _conv(store: Store, t: Tenant, *, user: str | None = None, channel: str = "ws") -> Any:
    persona_id = t.persona_id
    user_id = (await store.get_or_create_user(t.id, user)).id if user else t.user_id
    return await store.create_conversation(
        t.id, persona_id=persona_id, user_id=user_id, channel=channel
    )


async def _message(
    store: Store,
    conv: ConversationRecord,
    *,
    at: datetime = T0,
    role: str = "user",
    content: str = "hi",
) -> MessageContext:
    msg, _ = await store.add_message(conv.tenant_id, conv.id, role=role, content=content)
    ctx = await AnalysisStore(store).message_context(conv.tenant_id, msg.id)
    assert ctx is not None
    return dataclasses.replace(ctx, created_at=at)


def _emotions(**scores: float) -> dict[str, float]:
    return {**dict.fromkeys(EMOTIONS, 0.0), **scores}


async def _save(
    analyses: AnalysisStore, ctx: MessageContext, compound: float, **emotions: float
) -> Any:
    pos, neg = max(compound, 0.0), max(-compound, 0.0)
    return await analyses.save(
        ctx,
        sentiment={"compound": compound, "pos": pos, "neu": 1 - pos - neg, "neg": neg},
        emotions=_emotions(**emotions),
        language="en",
        analyzer="test",
    )


async def _series(analyses: AnalysisStore, tenant_id: str, **kw: Any) -> list[Any]:
    kw.setdefault("granularity", "hour")
    kw.setdefault("start", T0 - timedelta(days=2))
    kw.setdefault("end", T0 + timedelta(days=2))
    return await analyses.series(tenant_id, **kw)


# -- storing ---------------------------------------------------------------------------


async def test_an_analysis_is_stored_once_and_read_back(store: Store) -> None:
    t = await _tenant(store, "a")
    analyses = AnalysisStore(store)
    ctx = await _message(store, t.conv, content="I love it")
    record = await _save(analyses, ctx, 0.8, joy=0.75, trust=0.25)
    assert record is not None
    public = record.to_public()
    assert public["sentiment"] == {"compound": 0.8, "pos": 0.8, "neu": 0.2, "neg": 0.0}
    assert public["emotions"]["joy"] == 0.75 and list(public["emotions"]) == list(EMOTIONS)
    assert public["language"] == "en"

    assert await _save(analyses, ctx, -1.0, anger=1.0) is None  # a rerun changes nothing
    got = await analyses.get(t.id, ctx.message_id)
    assert got is not None and got.to_public() == public and got.analyzer == "test"
    [point] = await _series(analyses, t.id)
    assert point.count == 1  # counted once

    assert await analyses.get_many(t.id, []) == {}
    other = await _message(store, t.conv)
    assert set(await analyses.get_many(t.id, [ctx.message_id, other.message_id])) == {
        ctx.message_id
    }


async def test_message_context_knows_persona_user_and_channel(store: Store) -> None:
    t = await _tenant(store, "a", channel="api")
    analyses = AnalysisStore(store)
    msg, _ = await store.add_message(t.id, t.conv.id, role="assistant", content="yo")
    ctx = await analyses.message_context(t.id, msg.id)
    assert ctx is not None
    assert (ctx.persona_id, ctx.user_id, ctx.channel, ctx.role, ctx.content) == (
        t.persona_id,
        t.user_id,
        "api",
        "assistant",
        "yo",
    )
    assert await analyses.message_context(t.id, "msg_missing") is None


# -- aggregates ------------------------------------------------------------------------


async def test_buckets_sum_incrementally_per_hour_and_day(store: Store) -> None:
    t = await _tenant(store, "a")
    analyses = AnalysisStore(store)
    # hour 10: +0.8 (joy) and -0.4 (anger); hour 11: +0.2 (joy); next day: -1.0 (fear)
    for at, compound, emo in [
        (T0, 0.8, {"joy": 1.0}),
        (T0 + timedelta(minutes=30), -0.4, {"anger": 1.0}),
        (T0 + timedelta(hours=1), 0.2, {"joy": 0.5, "trust": 0.5}),
        (T0 + timedelta(days=1), -1.0, {"fear": 1.0}),
    ]:
        await _save(analyses, await _message(store, t.conv, at=at), compound, **emo)

    hours = await _series(analyses, t.id)
    assert [(p.start, p.count) for p in hours] == [
        (datetime(2026, 3, 1, 10, tzinfo=UTC), 2),
        (datetime(2026, 3, 1, 11, tzinfo=UTC), 1),
        (datetime(2026, 3, 2, 10, tzinfo=UTC), 1),
    ]
    assert hours[0].sentiment["compound"] == pytest.approx(0.2)
    assert hours[0].emotions["joy"] == pytest.approx(0.5)
    assert hours[0].emotions["anger"] == pytest.approx(0.5)
    assert hours[1].emotions["trust"] == pytest.approx(0.5)

    days = await _series(analyses, t.id, granularity="day")
    assert [(p.start, p.count) for p in days] == [
        (datetime(2026, 3, 1, tzinfo=UTC), 3),
        (datetime(2026, 3, 2, tzinfo=UTC), 1),
    ]
    assert days[0].sentiment["compound"] == pytest.approx((0.8 - 0.4 + 0.2) / 3)
    assert days[1].emotions["fear"] == pytest.approx(1.0)

    # the range: buckets that start in [the start of from's bucket, to)
    window = await _series(  # 10:45 -> 11:00
        analyses, t.id, start=T0 + timedelta(minutes=30), end=T0 + timedelta(minutes=45)
    )
    assert [p.start.hour for p in window] == [10]
    window = await _series(  # 10:45 -> 11:00:01
        analyses, t.id, start=T0 + timedelta(minutes=30), end=T0 + timedelta(minutes=46)
    )
    assert [p.start.hour for p in window] == [10, 11]

    # 3 hour buckets and 2 day buckets, each for the 8 persona/user/channel slices
    assert await _count(store, "analysis_buckets") == (3 + 2) * 8
    assert await _count(store, "message_analyses") == 4


async def _count(store: Store, table: str) -> int:
    async with store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT set_config('salon.scope', 'system', true)"))
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_filters_select_their_slice(store: Store) -> None:
    t = await _tenant(store, "a")
    persona2 = await store.create_persona(t.id, slug="p2", name="P2", data={})
    analyses = AnalysisStore(store)
    bob = await _conv(store, t, user="bob")
    api = await _conv(store, t, channel="api")
    other_persona = await store.create_conversation(
        t.id, persona_id=persona2.id, user_id=t.user_id, channel="ws"
    )
    await _save(analyses, await _message(store, t.conv), 1.0)  # persona p, user a, ws
    await _save(analyses, await _message(store, bob), 0.5)  # persona p, bob, ws
    await _save(analyses, await _message(store, api), -0.5)  # persona p, user a, api
    await _save(analyses, await _message(store, other_persona), -1.0)  # p2, user a, ws
    await _save(analyses, await _message(store, t.conv, role="assistant"), 0.1)

    async def point(**filters: Any) -> tuple[int, float]:
        [p] = await _series(analyses, t.id, **filters)
        return p.count, round(p.sentiment["compound"], 6)

    assert await point() == (4, 0.0)
    assert await point(persona_id=t.persona_id) == (3, round(1.0 / 3, 6))
    assert await point(persona_id=persona2.id) == (1, -1.0)
    bob_id = bob.user_id
    assert await point(user_id=bob_id) == (1, 0.5)
    assert await point(user_id=t.user_id) == (3, round(-0.5 / 3, 6))
    assert await point(channel="api") == (1, -0.5)
    assert await point(channel="ws") == (3, round(0.5 / 3, 6))
    assert await point(persona_id=t.persona_id, user_id=t.user_id, channel="ws") == (1, 1.0)
    assert await point(persona_id=t.persona_id, channel="ws") == (2, 0.75)
    assert await point(roles=("assistant",)) == (1, 0.1)
    assert await point(roles=("user", "assistant")) == (5, round(0.1 / 5, 6))
    assert await _series(analyses, t.id, channel="sms") == []


async def test_tenants_never_see_each_others_analyses(store: Store) -> None:
    a = await _tenant(store, "a")
    b = await _tenant(store, "b")
    analyses = AnalysisStore(store)
    ctx = await _message(store, a.conv)
    await _save(analyses, ctx, 0.9, joy=1.0)

    assert await analyses.get(b.id, ctx.message_id) is None
    assert await analyses.get_many(b.id, [ctx.message_id]) == {}
    assert await analyses.message_context(b.id, ctx.message_id) is None
    assert await _series(analyses, b.id) == []
    assert await _series(analyses, b.id, persona_id=a.persona_id) == []
    assert len(await _series(analyses, a.id)) == 1
    assert await analyses.forget_user(b.id, a.user_id) == 0
    assert len(await _series(analyses, a.id, user_id=a.user_id)) == 1


async def test_forgetting_a_user_removes_their_analyses_and_per_user_buckets(
    store: Store,
) -> None:
    t = await _tenant(store, "a")
    analyses = AnalysisStore(store)
    ctx = await _message(store, t.conv)
    await _save(analyses, ctx, 0.9)

    assert await analyses.forget_user(t.id, t.user_id) == 2 * 4  # hour+day x 4 slices
    await store.delete_user(t.id, t.user_id)
    assert await analyses.get(t.id, ctx.message_id) is None  # cascaded with the message
    assert await _series(analyses, t.id, user_id=t.user_id) == []
    [total] = await _series(analyses, t.id)  # anonymous totals stay
    assert total.count == 1


async def test_concurrent_writers_count_every_message_once(store: Store) -> None:
    t = await _tenant(store, "a")
    analyses = AnalysisStore(store)
    contexts = [await _message(store, t.conv, at=T0 + timedelta(seconds=i)) for i in range(12)]
    # each message twice, all at once: same buckets, same rows
    results = await asyncio.gather(*[_save(analyses, c, 0.5) for c in contexts * 2])
    assert sum(r is not None for r in results) == 12
    [point] = await _series(analyses, t.id)
    assert point.count == 12
    assert point.sentiment["compound"] == pytest.approx(0.5)


def test_bucket_start_is_utc() -> None:
    moment = datetime(2026, 3, 1, 1, 30, tzinfo=UTC)
    paris = moment.astimezone(ZoneInfo("Europe/Paris"))
    assert bucket_start(paris, "hour") == datetime(2026, 3, 1, 1, tzinfo=UTC)
    assert bucket_start(paris, "day") == datetime(2026, 3, 1, tzinfo=UTC)
    assert bucket_start(datetime(2026, 3, 1, 23, 59), "day") == datetime(2026, 3, 1, tzinfo=UTC)


# -- the service: hook -> job -> stored -> event ----------------------------------------


class SignAnalyzer(Analyzer):
    name = "sign"

    def analyze_batch(self, texts: Sequence[str]) -> list[Analysis]:
        return [
            Analysis(
                sentiment=Sentiment(compound=-0.5 if "bad" in t else 0.5),
                emotions=_emotions(anger=1.0) if "bad" in t else _emotions(joy=1.0),
                language="en",
            )
            for t in texts
        ]


async def test_the_hook_runs_a_job_that_stores_and_announces(store: Store) -> None:
    t = await _tenant(store, "a")
    events = InProcessEventLog()
    jobs = InProcessJobRunner()
    service = build_service(
        store, events, AnalysisSettings(roles="user"), jobs=jobs, analyzer=SignAnalyzer()
    )
    assert isinstance(service, AnalysisService)
    service.register(jobs)
    assert JOB_KIND in jobs.kinds
    await jobs.start()
    try:
        persona = await store.get_persona(t.id, t.persona_id)
        user = await store.get_user(t.id, t.user_id)
        assert persona is not None and user is not None
        session = Session(persona=persona, user=user, conversation=t.conv)
        good, _ = await store.add_message(t.id, t.conv.id, role="user", content="good day")
        reply, _ = await store.add_message(t.id, t.conv.id, role="assistant", content="bad")
        await service.after_message(session, good)
        await service.after_message(session, reply)  # not an analysed role: no job
        assert await jobs.status(job_id_for(reply.id)) is None
        for _ in range(100):
            status = await jobs.status(job_id_for(good.id))
            if status is not None and status.finished:
                break
            await asyncio.sleep(0.02)
        assert status is not None and status.state == "done", status
        assert status.result == {"message_id": good.id, "stored": True}

        stored = await service.analyses.get(t.id, good.id)
        assert stored is not None and stored.analyzer == "sign"
        [event] = await events.replay(t.conv.id, 0)
        assert event["type"] == EVENT_TYPE and event["message_id"] == good.id
        assert event["role"] == "user"
        assert event["analysis"] == stored.to_public()
        conv = await store.get_conversation(t.id, t.conv.id)
        assert conv is not None and conv.last_seq == event["seq"]

        # a second run of the same message: nothing stored, nothing announced
        assert await service.analyze_message(t.id, good.id) is None
        assert len(await events.replay(t.conv.id, 0)) == 1

        attached = await service.attach(t.id, [good.to_public(), reply.to_public()])
        assert attached[0]["analysis"] == stored.to_public()
        assert attached[1]["analysis"] is None
    finally:
        await jobs.close()
        await service.close()


async def test_a_worker_registers_the_job_unless_disabled(store: Store) -> None:
    runner = InProcessJobRunner()
    service = register_analysis_jobs(runner, store, InProcessEventLog(), AnalysisSettings())
    assert service is not None and JOB_KIND in runner.kinds
    await service.close()
    off = AnalysisSettings(enabled=False)
    idle = InProcessJobRunner()
    assert register_analysis_jobs(idle, store, InProcessEventLog(), off) is None
    assert JOB_KIND not in idle.kinds


# -- Postgres: row-level security on both tables ------------------------------------------


async def test_postgres_row_level_security_hides_analyses_without_a_tenant(
    postgres_url: str, tmp_path: Path
) -> None:
    import asyncpg

    store = Store(create_engine(normalize_database_url(postgres_url, tmp_path)))
    try:
        await migrate(store.engine)
        t = await _tenant(store, "a")
        await _save(AnalysisStore(store), await _message(store, t.conv), 0.7, joy=1.0)
        assert await _count(store, "message_analyses") == 1  # with the system scope
        assert await _count(store, "analysis_buckets") == 16
    finally:
        await store.close()
    conn = await asyncpg.connect(postgres_url)  # the app role, as a query that forgot the tenant
    try:
        flags = await conn.fetch(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
            " WHERE relname = ANY($1::text[]) AND relkind = 'r'",
            ["message_analyses", "analysis_buckets"],
        )
        assert sorted(tuple(r) for r in flags) == [
            ("analysis_buckets", True, True),
            ("message_analyses", True, True),
        ]
        assert await conn.fetchval("SELECT count(*) FROM message_analyses") == 0
        assert await conn.fetchval("SELECT count(*) FROM analysis_buckets") == 0
        assert await conn.execute("UPDATE analysis_buckets SET count = 0") == "UPDATE 0"
    finally:
        await conn.close()


async def test_migration_0005_downgrades_and_upgrades(store: Store) -> None:
    from alembic import command
    from sqlalchemy import inspect
    from sqlalchemy.engine import Connection

    from memory.migrate import alembic_config

    def _to(revision: str, up: bool) -> Any:
        def _run(conn: Connection) -> list[str]:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            (command.upgrade if up else command.downgrade)(cfg, revision)
            return list(inspect(conn).get_table_names())

        return _run

    ours = {"message_analyses", "analysis_buckets"}
    async with store.engine.begin() as conn:
        assert not ours & set(await conn.run_sync(_to("0004", up=False)))
    async with store.engine.begin() as conn:
        assert ours <= set(await conn.run_sync(_to("head", up=True)))
    t = await _tenant(store, "after")
    assert await _save(AnalysisStore(store), await _message(store, t.conv), 0.3) is not None
    if store.engine.dialect.name == "postgresql":
        async with store.engine.connect() as conn:
            policies = await conn.execute(
                text("SELECT tablename FROM pg_policies WHERE tablename = ANY(:t)"),
                {"t": sorted(ours)},
            )
            assert {r[0] for r in policies} == ours
