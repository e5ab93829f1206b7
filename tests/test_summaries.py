"""Rolling summaries: when a fold is due, what it covers, its use in the next prompt, fallbacks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agents.conversations import ConversationService, TurnSettings
from agents.llm.base import Capabilities, ChatMessage
from agents.personas import create_persona
from agents.prompt import SUMMARY_HEADING, HistoryItem, assemble
from agents.summaries import (
    THROUGH_REF,
    ConversationSummaries,
    SummaryService,
    SummarySettings,
    extractive_summary,
    plan_fold,
    register_summary_jobs,
    uncovered,
)
from media.jobs import InProcessJobRunner
from memory.db import create_engine, normalize_database_url
from memory.eventlog import InProcessEventLog, follow
from memory.memories import MemoryRecord, MemoryStore
from memory.migrate import migrate
from memory.store import Store
from tests.fakes.llm import ScriptedLLM

TENANT = "ten_s"


def count(text: str) -> int:
    return max(1, len(text.split()))


def items(n: int, words: int = 10) -> list[HistoryItem]:
    return [
        HistoryItem("user" if i % 2 == 0 else "assistant", f"turn{i} " + "w " * words, f"m{i:03}")
        for i in range(n)
    ]


def plan(history: list[HistoryItem], window: int, max_messages: int = 50) -> str | None:
    prompt = assemble(
        {"name": "Ada"},
        history,
        user_name="Bob",
        context_window=window,
        reply_tokens=50,
        count_tokens=count,
    )
    return plan_fold(history, prompt, max_messages=max_messages, settings=SummarySettings())


# -- planning ----------------------------------------------------------------------


def test_no_fold_while_the_history_fits_comfortably() -> None:
    assert plan(items(6), window=1000) is None
    assert plan(items(2), window=100) is None  # too little history to fold anything


def test_a_fold_is_due_before_the_window_overflows() -> None:
    history = items(10)  # 10 turns of 15 tokens: 150 of a ~175-token room
    prompt = assemble(
        {"name": "Ada"},
        history,
        user_name="Bob",
        context_window=250,
        reply_tokens=50,
        count_tokens=count,
    )
    assert prompt.kept == len(history)  # everything still fits ...
    upto = plan_fold(history, prompt, max_messages=50, settings=SummarySettings())
    assert upto is not None  # ... but it is past 75 %: fold the oldest now
    folded = [h.id for h in history].index(upto) + 1
    kept_tokens = sum(prompt.costs[folded:])
    assert kept_tokens <= 0.5 * prompt.history_budget
    assert 2 <= len(history) - folded < len(history)


def test_a_fold_is_due_when_turns_were_left_out_or_too_many_are_loaded() -> None:
    assert plan(items(40), window=300) is not None  # overflow
    many = items(40, words=1)
    upto = plan(many, window=100_000, max_messages=50)  # 40 > 75 % of 50 messages
    assert upto == "m014"  # the newest 25 (half of 50) stay


def test_uncovered_starts_after_the_summary_cursor() -> None:
    from agents.summaries import RollingSummary

    history = items(6)
    summary = RollingSummary("mem_1", "conv", "text", "m002", ("m000", "m001", "m002"))
    assert [h.id for h in uncovered(history, summary)] == ["m003", "m004", "m005"]
    old = RollingSummary("mem_1", "conv", "text", "m-older", ())
    assert uncovered(history, old) == history


def test_the_summary_goes_into_the_system_prompt_and_replaces_the_greeting() -> None:
    prompt = assemble(
        {"name": "Ada", "first_mes": "Hello!"},
        [HistoryItem("user", "and then?", "m9")],
        user_name="Bob",
        context_window=1000,
        reply_tokens=50,
        count_tokens=count,
        memories=["- Bob sails.", "Bob likes tea"],
        summary="- Bob sails.",
    )
    system = prompt.messages[0].content
    assert system.endswith(f"{SUMMARY_HEADING}\n- Bob sails.")
    assert system.count("Bob sails") == 1  # a recalled copy of the summary is not repeated
    assert [m.role for m in prompt.messages] == ["system", "user"]


def test_a_long_summary_keeps_its_newest_notes_and_assembly_still_fits() -> None:
    summary = "\n".join(f"- note {i} " + "x " * 20 for i in range(20))
    prompt = assemble(
        {"name": "Ada"},
        [HistoryItem("user", "hi", "m1")],
        user_name="Bob",
        context_window=400,
        reply_tokens=50,
        count_tokens=count,
        summary=summary,
    )
    system = prompt.messages[0].content
    assert "- note 19" in system and "- note 0 " not in system
    assert count(system.split(SUMMARY_HEADING)[1]) <= 100
    assert prompt.messages[-1].content == "hi"


# -- the extractive fallback ----------------------------------------------------------


def test_extractive_summary_keeps_what_matters_within_budget() -> None:
    lines = [
        ("Bob", "Hi!"),
        ("Ada", "Hello Bob, how are you today?"),
        ("Bob", "I moved to Lisbon in March and I work at the harbour as a pilot."),
        ("Ada", "Lisbon has a lovely harbour. Pilots guide ships into the harbour."),
        ("Bob", "ok"),
        ("Bob", "My sister Clara visits the harbour on Sundays."),
    ]
    text = extractive_summary("", lines, max_tokens=40, count_tokens=count, user_speaker="Bob")
    notes = text.splitlines()
    assert sum(count(n) + 1 for n in notes) <= 40
    assert "- Bob: I moved to Lisbon in March and I work at the harbour as a pilot." in notes
    assert "- Bob: My sister Clara visits the harbour on Sundays." in notes
    assert "- Bob: ok" not in notes and "- Bob: Hi!" not in notes
    # in the order said, and the same every time
    assert notes.index(
        "- Bob: I moved to Lisbon in March and I work at the harbour as a pilot."
    ) < notes.index("- Bob: My sister Clara visits the harbour on Sundays.")
    assert (
        extractive_summary("", lines, max_tokens=40, count_tokens=count, user_speaker="Bob") == text
    )


def test_extractive_summary_rolls_the_previous_notes_forward() -> None:
    first = extractive_summary(
        "", [("Bob", "I keep three cats named Io, Europa and Callisto.")], max_tokens=100
    )
    second = extractive_summary(
        first, [("Bob", "I bought a sailing boat called Io too.")], max_tokens=100
    )
    assert second.splitlines() == [
        "- Bob: I keep three cats named Io, Europa and Callisto.",
        "- Bob: I bought a sailing boat called Io too.",
    ]


def test_extractive_summary_never_fails() -> None:
    assert extractive_summary("", [], max_tokens=10) == ""
    assert extractive_summary("", [("Bob", "")], max_tokens=10) == ""
    huge = extractive_summary("", [("Bob", "word " * 5000)], max_tokens=5)
    assert huge and len(huge) < 400
    assert extractive_summary("- kept", [("Bob", "!!! ???")], max_tokens=10) == "- kept"


# -- through the conversation service --------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(create_engine(normalize_database_url(None, tmp_path)))
    await migrate(s.engine)
    await s.create_tenant("s", tenant_id=TENANT)
    yield s
    await s.close()


class SmallWindowLLM(ScriptedLLM):
    """The chat model: a small window, so a short conversation overflows it."""

    def __init__(self, window: int = 400, **kwargs: Any) -> None:
        super().__init__(["Sure", ", noted."], **kwargs)
        self.capabilities = Capabilities(context_window=window)


class Rig:
    def __init__(self, store: Store, chat: ScriptedLLM, summarizer: ScriptedLLM | None) -> None:
        self.store = store
        self.chat = chat
        self.memories = MemoryStore(store)
        self.jobs = InProcessJobRunner(grace_seconds=0.2)
        self.summary_service = SummaryService(
            store, self.memories, summarizer, SummarySettings(request_interval_seconds=60)
        )
        register_summary_jobs(self.jobs, self.summary_service)
        self.summaries = ConversationSummaries(self.summary_service, self.jobs.enqueue)
        self.service = ConversationService(
            store,
            InProcessEventLog(),
            chat,
            TurnSettings(coalesce_seconds=0, max_reply_tokens=40),
            summaries=self.summaries,
        )

    async def say(self, session: Any, text: str, n: int) -> None:
        after = await self.service.events.latest_seq(session.conversation.id)
        await self.service.submit(session, client_id=f"c{n}", text=text)
        async for event in follow(self.service.events, session.conversation.id, after):
            if event["type"] in ("response.done", "error"):
                assert event["type"] == "response.done", event
                return

    async def summary(self, conv_id: str, *, previous: str | None = None) -> MemoryRecord:
        for _ in range(300):
            live = await self.memories.list(TENANT, kind="summary")
            if live and live[0].id != previous:
                return live[0]
            await asyncio.sleep(0.02)
        raise AssertionError("no summary was written")


@pytest.fixture
async def persona_id(store: Store) -> str:
    return (await create_persona(store, TENANT, {"name": "Ada", "first_mes": "Hi!"})).id


def _last_prompt(llm: ScriptedLLM) -> list[ChatMessage]:
    return llm.calls[-1]


SENTENCES = [
    "I grew up in Porto near the river {n}.",
    "My brother Tiago repairs old radios, number {n}.",
    "I am training for a marathon in October, week {n}.",
]


async def _chat_until_summary(rig: Rig, session: Any) -> MemoryRecord:
    for n in range(40):
        await rig.say(session, SENTENCES[n % 3].format(n=n) + " More words " * 6, n)
        live = await rig.memories.list(TENANT, kind="summary")
        if live:
            return live[0]
    raise AssertionError("the conversation never overflowed into a summary")


async def test_overflowing_history_is_summarized_and_used_in_the_next_prompt(
    store: Store, persona_id: str
) -> None:
    summarizer = ScriptedLLM(["- Bob grew up in Porto.\n", "- Bob's brother Tiago fixes radios."])
    rig = Rig(store, SmallWindowLLM(), summarizer)
    await rig.jobs.start()
    try:
        session = await rig.service.open(
            TENANT, persona=persona_id, user_external_id="bob", user_name="Bob"
        )
        conv_id = session.conversation.id
        await _chat_until_summary(rig, session)
        record = await rig.summary(conv_id)
        assert record.text == "- Bob grew up in Porto.\n- Bob's brother Tiago fixes radios."
        assert record.kind == "summary" and record.persona_id == persona_id
        messages = await store.list_messages(TENANT, conv_id, limit=500)
        ids = [m.id for m in messages]
        # it covers the oldest messages, in order, from the very first, through its cursor
        covered = list(record.source_message_ids)
        assert covered == ids[: len(covered)] and len(covered) < len(ids)
        assert THROUGH_REF + covered[-1] in record.source_refs
        assert f"conversation:{conv_id}" in record.source_refs
        # the summarizer saw those messages, with the speakers' names
        asked = summarizer.calls[0][1].content
        assert "Bob: I grew up in Porto near the river 0." in asked and "Ada: Sure, noted." in asked

        # the next reply: the summary in the system prompt, covered turns left out
        await rig.say(session, "what do you remember?", 99)
        prompt = _last_prompt(rig.chat)
        assert f"{SUMMARY_HEADING}\n{record.text}" in prompt[0].content
        sent = [m.content for m in prompt[1:]]
        now = await store.list_messages(TENANT, conv_id, limit=500)
        after_cursor = [m.content for m in now[len(covered) : -1]]  # without the new reply
        assert 0 < len(sent) <= len(after_cursor) and sent == after_cursor[-len(sent) :]
        assert sent[-1] == "what do you remember?" and "Hi!" not in sent

        # the next fold continues from the cursor and supersedes the first version
        # (as if the request interval had passed: the throttle's lock is let go)
        throttle = f"summary-request:{conv_id}"
        hot = rig.service.hot
        await hot.release_lock(throttle, await hot.lock_owner(throttle) or "")
        await _more_until_new_summary(rig, session, record)
        newer = await rig.summary(conv_id, previous=record.id)
        # A fold still in flight may add a third version meanwhile: the version
        # that superseded the first one is the one that continues from its cursor,
        # and the chain from the first leads to the live one.
        old = await rig.memories.get(TENANT, record.id)
        assert old is not None and old.superseded_by is not None
        second = await rig.memories.get(TENANT, old.superseded_by)
        assert second is not None and second.source_message_ids[0] == ids[len(covered)]
        chain, chain_ids = second, [second.id]
        while chain.superseded_by is not None:
            following = await rig.memories.get(TENANT, chain.superseded_by)
            assert following is not None
            chain = following
            chain_ids.append(chain.id)
        assert chain.valid_to is None and newer.id in chain_ids
    finally:
        await rig.jobs.close()


async def _more_until_new_summary(rig: Rig, session: Any, record: MemoryRecord) -> None:
    for n in range(100, 140):
        await rig.say(session, SENTENCES[n % 3].format(n=n) + " More words " * 6, n)
        live = await rig.memories.list(TENANT, kind="summary")
        if live and live[0].id != record.id:
            return
    raise AssertionError("no second fold")


@pytest.mark.parametrize("summarizer", ["failing", "embedded", "none"])
async def test_without_a_working_llm_the_summary_is_extractive(
    store: Store, persona_id: str, summarizer: str
) -> None:
    model: ScriptedLLM | None = None
    if summarizer == "failing":
        model = ScriptedLLM(fail_after=0)
    elif summarizer == "embedded":
        model = ScriptedLLM(["never used"])
        model.capabilities = Capabilities(context_window=2048, local=True)
    rig = Rig(store, SmallWindowLLM(), model)
    await rig.jobs.start()
    try:
        session = await rig.service.open(
            TENANT, persona=persona_id, user_external_id="bob", user_name="Bob"
        )
        await _chat_until_summary(rig, session)
        record = await rig.summary(session.conversation.id)
        assert "- Bob: I grew up in Porto near the river 0." in record.text.splitlines()
        if summarizer == "embedded":
            assert model is not None and model.calls == []  # the tiny model is not asked
        if summarizer == "failing":
            assert model is not None and len(model.calls) == 1
    finally:
        await rig.jobs.close()


async def test_replies_never_wait_for_a_slow_summarizer(store: Store, persona_id: str) -> None:
    slow = ScriptedLLM(["- notes"], delay=30.0)
    rig = Rig(store, SmallWindowLLM(window=200), slow)
    await rig.jobs.start()
    try:
        session = await rig.service.open(
            TENANT, persona=persona_id, user_external_id="bob", user_name="Bob"
        )
        loop = asyncio.get_running_loop()
        for n in range(12):
            started = loop.time()
            await rig.say(session, "a long message " * 30, n)
            assert loop.time() - started < 2.0
        assert slow.calls  # a fold is under way, and nobody waits for it
        prompt = _last_prompt(rig.chat)
        assert prompt[-1].content.startswith("a long message")
        assert SUMMARY_HEADING not in prompt[0].content  # no summary yet: oldest turns left out
    finally:
        await rig.jobs.close()


async def test_replies_go_on_when_summaries_cannot_be_read(store: Store, persona_id: str) -> None:
    rig = Rig(store, SmallWindowLLM(window=200), None)

    async def broken_latest(*args: Any) -> Any:
        raise RuntimeError("memory store down")

    rig.summary_service.latest = broken_latest  # type: ignore[method-assign]
    await rig.jobs.start()
    try:
        session = await rig.service.open(
            TENANT, persona=persona_id, user_external_id="bob", user_name="Bob"
        )
        for n in range(12):
            await rig.say(session, "a long message " * 30, n)
        prompt = _last_prompt(rig.chat)
        assert prompt[-1].role == "user" and prompt[-1].content.startswith("a long message")
        assert SUMMARY_HEADING not in prompt[0].content
    finally:
        await rig.jobs.close()


# -- through a real server --------------------------------------------------------------


async def test_a_long_conversation_gets_a_summary_through_the_server(make_server: Any) -> None:
    import httpx

    from tests.conftest import connect

    srv = make_server()
    persona = srv.create_persona(name="Sum")
    c = await connect(srv)
    await c.start(persona["id"], user="long-talker")
    for n in range(24):  # 48 messages: past 75 % of the 50 a reply loads
        await c.send({"type": "message.create", "id": f"m{n}", "text": f"I like topic {n}."})
        await c.until("response.done", timeout=30)
    summary: dict[str, Any] | None = None
    for _ in range(200):
        r = httpx.get(f"{srv.url}/v1/users/long-talker/export", headers=srv.auth, timeout=10)
        live = [m for m in r.json()["memories"] if m["kind"] == "summary" and not m["valid_to"]]
        if live:
            summary = live[0]
            break
        await asyncio.sleep(0.1)
    assert summary is not None, "no summary was written"
    # the fake model wrote it (an OpenAI-compatible endpoint is not the embedded model)
    assert summary["text"] == "Hello from the fake model."
    assert any(ref.startswith(THROUGH_REF) for ref in summary["source_refs"])
    await c.send({"type": "message.create", "id": "last", "text": "[echo] recap"})
    done = await c.until("response.done", timeout=30)
    await c.close()
    assert f"{SUMMARY_HEADING}\nHello from the fake model." in done["text"]
    # an internal job: the person's client hears nothing about it
    assert not [e for e in c.events if e["type"].startswith("media.")]


async def test_a_replica_asks_for_a_fold_once_per_interval(store: Store) -> None:
    from memory.hotstate import InProcessHotState

    queued: list[str | None] = []

    async def enqueue(name: str, payload: dict[str, Any], *, job_id: str | None = None) -> Any:
        queued.append(job_id)

    service = SummaryService(
        store, MemoryStore(store), None, SummarySettings(request_interval_seconds=60)
    )
    summaries = ConversationSummaries(service, enqueue)
    hot = InProcessHotState()
    fields = {"tenant_id": TENANT, "persona_id": "p", "user_id": "u", "conversation_id": "c"}
    for upto in ("m1", "m2", "m3"):  # every reply after an overflow asks, from one replica
        await summaries.request(
            hot, "replica-a", **fields, upto=upto, user_name="Bob", persona_name="Ada"
        )
    assert queued == ["summary.c.m1"]
