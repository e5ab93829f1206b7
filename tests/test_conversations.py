"""The conversation service without sockets: real SQLite store, in-process log, scripted LLM."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agents.conversations import ConversationError, ConversationService, TurnSettings
from agents.personas import create_persona
from agents.sessions import ConversationHooks, Session
from memory.db import create_engine, normalize_database_url
from memory.eventlog import InProcessEventLog, follow
from memory.migrate import migrate
from memory.records import MessageRecord
from memory.store import Store
from tests.fakes.llm import ScriptedLLM

TENANT = "ten_t"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(create_engine(normalize_database_url(None, tmp_path)))
    await migrate(s.engine)
    await s.create_tenant("t", tenant_id=TENANT)
    yield s
    await s.close()


@pytest.fixture
async def persona_id(store: Store) -> str:
    record = await create_persona(
        store, TENANT, {"name": "Ada", "personality": "curious", "first_mes": "Hi {{user}}!"}
    )
    return record.id


def service(
    store: Store, provider: ScriptedLLM, log: InProcessEventLog | None = None
) -> ConversationService:
    return ConversationService(
        store,
        log or InProcessEventLog(),
        provider,
        TurnSettings(coalesce_seconds=0, max_message_chars=50),
    )


async def opened(
    store: Store, persona_id: str, provider: ScriptedLLM
) -> tuple[ConversationService, Session]:
    """A service and alice's session with the persona."""
    svc = service(store, provider)
    return svc, await svc.open(TENANT, persona=persona_id, user_external_id="alice")


async def collect_until_final(
    svc: ConversationService, conv_id: str, after: int = 0, finals: int = 1
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    seen = 0

    async def _run() -> None:
        nonlocal seen
        async for e in follow(svc.events, conv_id, after):
            events.append(e)
            if e["type"] in ("response.done", "response.cancelled") or (
                e["type"] == "error" and "response_id" in e
            ):
                seen += 1
                if seen == finals:
                    return

    await asyncio.wait_for(_run(), 10)
    return events


async def test_unknown_persona_and_foreign_conversation_are_refused(
    store: Store, persona_id: str
) -> None:
    svc = service(store, ScriptedLLM())
    with pytest.raises(ConversationError) as info:
        await svc.open(TENANT, persona="nope", user_external_id="u")
    assert info.value.code == "unknown_persona"
    mine = await svc.open(TENANT, persona=persona_id, user_external_id="alice")
    with pytest.raises(ConversationError) as info:
        await svc.open(
            TENANT, persona=persona_id, user_external_id="bob", conversation_id=mine.conversation.id
        )
    assert info.value.code == "conversation_not_found"
    await store.create_tenant("other", tenant_id="ten_other")
    with pytest.raises(ConversationError):
        await svc.open("ten_other", persona=persona_id, user_external_id="alice")


async def test_reply_is_stored_and_logged(store: Store, persona_id: str) -> None:
    provider = ScriptedLLM()
    svc = service(store, provider)
    session = await svc.open(
        TENANT, persona=persona_id, user_external_id="alice", user_name="Alice"
    )
    message, created = await svc.submit(session, client_id="c1", text="hello")
    assert created
    events = await collect_until_final(svc, session.conversation.id)
    assert [e["type"] for e in events][:2] == ["message.accepted", "response.created"]
    assert events[0]["id"] == "c1" and events[0]["message_id"] == message.id
    assert events[1]["reply_to"] == [message.id]
    assert events[-1]["type"] == "response.done" and events[-1]["text"] == "Hello there!"
    stored = await store.list_messages(TENANT, session.conversation.id)
    assert [(m.role, m.content, m.status) for m in stored] == [
        ("user", "hello", "complete"),
        ("assistant", "Hello there!", "complete"),
    ]
    assert stored[1].id == events[-1]["message_id"]
    # the model saw the persona, the greeting and the user's name
    sent = provider.calls[0]
    assert sent[0].role == "system" and "Ada" in sent[0].content and "curious" in sent[0].content
    assert [(m.role, m.content) for m in sent[1:]] == [
        ("assistant", "Hi Alice!"),
        ("user", "hello"),
    ]
    await asyncio.sleep(0)
    conv = await store.get_conversation(TENANT, session.conversation.id)
    assert conv is not None and conv.last_seq == events[-1]["seq"]
    for _ in range(200):  # the lock is released just after the final event
        if conv.id not in svc._runners:
            break
        await asyncio.sleep(0.01)
    # Released with the reply's active record and the message's pending mark.
    assert await svc.hot.lock_owner(f"reply:{conv.id}") is None
    assert await svc.hot.get(f"active:{conv.id}") is None
    assert await svc.hot.get(f"pending:{message.id}") is None


async def test_duplicate_client_id_is_processed_once(store: Store, persona_id: str) -> None:
    provider = ScriptedLLM()
    svc = service(store, provider)
    session = await svc.open(TENANT, persona=persona_id, user_external_id="alice")
    first, created1 = await svc.submit(session, client_id="same", text="hello")
    await collect_until_final(svc, session.conversation.id)
    latest = await svc.events.latest_seq(session.conversation.id)
    again, created2 = await svc.submit(session, client_id="same", text="hello")
    assert created1 and not created2 and again.id == first.id
    assert await svc.events.latest_seq(session.conversation.id) == latest
    assert len(provider.calls) == 1
    assert len(await store.list_messages(TENANT, session.conversation.id)) == 2


@pytest.mark.parametrize(
    ("text", "code"), [("   ", "invalid_message"), ("x" * 51, "message_too_long")]
)
async def test_invalid_messages_are_refused_and_not_stored(
    store: Store, persona_id: str, text: str, code: str
) -> None:
    svc = service(store, ScriptedLLM())
    session = await svc.open(TENANT, persona=persona_id, user_external_id="alice")
    with pytest.raises(ConversationError) as info:
        await svc.submit(session, client_id="x", text=text)
    assert info.value.code == code
    assert await store.list_messages(TENANT, session.conversation.id) == []


async def test_messages_during_a_reply_are_answered_together(store: Store, persona_id: str) -> None:
    provider = ScriptedLLM(["a"] * 20, delay=0.01)
    svc = service(store, provider)
    session = await svc.open(TENANT, persona=persona_id, user_external_id="alice")
    m1, _ = await svc.submit(session, client_id="1", text="first")
    await asyncio.sleep(0.03)
    m2, _ = await svc.submit(session, client_id="2", text="second")
    m3, _ = await svc.submit(session, client_id="3", text="third")
    events = await collect_until_final(svc, session.conversation.id, finals=2)
    created = [e for e in events if e["type"] == "response.created"]
    assert [c["reply_to"] for c in created] == [[m1.id], [m2.id, m3.id]]
    assert len(provider.calls) == 2
    assert [m.content for m in provider.calls[1] if m.role == "user"][-2:] == ["second", "third"]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_cancel_and_shutdown(store: Store, persona_id: str) -> None:
    provider = ScriptedLLM(["w "] * 500, delay=0.01)
    svc = service(store, provider)
    session = await svc.open(TENANT, persona=persona_id, user_external_id="alice")
    conv_id = session.conversation.id
    assert not await svc.cancel(conv_id)
    await svc.submit(session, client_id="1", text="go")
    await asyncio.sleep(0.05)
    assert await svc.replying(conv_id) and await svc.cancel(conv_id)
    events = await collect_until_final(svc, conv_id)
    assert events[-1]["type"] == "response.cancelled"
    await svc.submit(session, client_id="2", text="again")
    await asyncio.sleep(0.05)
    await svc.shutdown(timeout=5)
    last = (await svc.events.replay(conv_id, 0))[-1]
    assert last["type"] == "error" and last["code"] == "shutdown"
    with pytest.raises(ConversationError) as info:
        await svc.submit(session, client_id="3", text="late")
    assert info.value.code == "shutdown"
    stored = await store.list_messages(TENANT, conv_id)
    assert [m.status for m in stored if m.role == "assistant"] == ["cancelled", "error"]


async def test_seq_continues_after_the_event_log_is_lost(store: Store, persona_id: str) -> None:
    svc = service(store, ScriptedLLM())
    session = await svc.open(TENANT, persona=persona_id, user_external_id="alice")
    await svc.submit(session, client_id="1", text="hi")
    events = await collect_until_final(svc, session.conversation.id)
    await asyncio.sleep(0.01)
    # a new process with an empty in-process log (crash, no snapshot)
    svc2 = service(store, ScriptedLLM(), InProcessEventLog())
    session2 = await svc2.open(
        TENANT,
        persona=persona_id,
        user_external_id="alice",
        conversation_id=session.conversation.id,
    )
    await svc2.submit(session2, client_id="2", text="again")
    accepted = (await svc2.events.replay(session.conversation.id, events[-1]["seq"]))[0]
    assert accepted["type"] == "message.accepted" and accepted["seq"] == events[-1]["seq"] + 1


async def test_cancel_right_after_submit_cancels_the_coming_reply(
    store: Store, persona_id: str
) -> None:
    svc = service(store, ScriptedLLM(["w "] * 200, delay=0.01))
    session = await svc.open(TENANT, persona=persona_id, user_external_id="alice")
    await svc.submit(session, client_id="1", text="go")
    assert await svc.cancel(session.conversation.id)  # before the Turn exists
    events = await collect_until_final(svc, session.conversation.id)
    assert events[-1]["type"] == "response.cancelled"


async def test_shutdown_right_after_submit_still_ends_the_reply(
    store: Store, persona_id: str
) -> None:
    svc = service(store, ScriptedLLM(["w "] * 200, delay=0.01))
    session = await svc.open(TENANT, persona=persona_id, user_external_id="alice")
    await svc.submit(session, client_id="1", text="go")
    await svc.shutdown(timeout=5)
    finals = [
        e
        for e in await svc.events.replay(session.conversation.id, 0)
        if e["type"] in ("response.done", "error")
    ]
    assert len(finals) == 1 and finals[0]["type"] == "error" and finals[0]["code"] == "shutdown"


async def test_a_failure_before_the_turn_is_reported_not_swallowed(
    store: Store, persona_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = service(store, ScriptedLLM())
    session = await svc.open(TENANT, persona=persona_id, user_external_id="alice")

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database gone")

    monkeypatch.setattr(store, "list_messages", broken)
    message, _ = await svc.submit(session, client_id="1", text="hello")
    event = None
    async for e in follow(svc.events, session.conversation.id, 0):
        if e["type"] == "error":
            event = e
            break
    assert (
        event is not None and event["code"] == "reply_failed" and event["reply_to"] == [message.id]
    )


class LosesADelta(InProcessEventLog):
    """A log whose appends finish later, like Redis's, and which loses the ``lost``-th delta."""

    def __init__(self, lost: int) -> None:
        super().__init__()
        self.lost = lost
        self.deltas = 0

    def submit(self, conversation_id: str, event: dict[str, Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if event["type"] == "response.text.delta":
            self.deltas += 1
            if self.deltas == self.lost:
                loop.call_later(0.005, future.set_exception, ConnectionError("log gone"))
                return future
        loop.call_later(0.005, future.set_result, self._place(conversation_id, event))
        return future


@pytest.mark.parametrize("lost", [3, 50], ids=["mid-reply", "last-delta"])
async def test_a_delta_the_log_failed_to_store_fails_the_reply_and_keeps_the_message(
    store: Store, persona_id: str, lost: int
) -> None:
    """The reply does not wait for each append; a failed one still ends it with an error."""
    log = LosesADelta(lost)
    svc = service(store, ScriptedLLM(["w "] * 50, delay=0.001), log)
    session = await svc.open(TENANT, persona=persona_id, user_external_id="alice")
    message, _ = await svc.submit(session, client_id="1", text="hello")
    error = None
    async for e in follow(svc.events, session.conversation.id, 0):
        if e["type"] == "error":
            error = e
            break
        assert e["type"] != "response.done"
    assert error is not None and error["code"] == "reply_failed"
    assert error["reply_to"] == [message.id]
    history = await store.list_messages(TENANT, session.conversation.id, limit=10)
    assert [m.role for m in history] == ["user"]  # kept; no half-logged reply stored
    await svc.shutdown(timeout=5)


async def test_a_resent_id_whose_reply_never_started_is_answered(
    store: Store, persona_id: str
) -> None:
    provider = ScriptedLLM()
    svc, session = await opened(store, persona_id, provider)
    # stored, but the process died before acknowledging or scheduling it
    await store.add_message(
        TENANT, session.conversation.id, role="user", content="hello", client_id="lost"
    )
    _, processed = await svc.submit(session, client_id="lost", text="hello")
    assert processed
    events = await collect_until_final(svc, session.conversation.id)
    assert events[-1]["type"] == "response.done" and len(provider.calls) == 1
    _, again = await svc.submit(session, client_id="lost", text="hello")
    assert not again and len(provider.calls) == 1  # answered now: a true duplicate


async def test_a_message_stored_while_its_submit_failed_is_answered_on_resend(
    store: Store, persona_id: str
) -> None:
    """The reply is marked pending while the message is stored; a failed submit unmarks it."""
    provider = ScriptedLLM()
    svc, session = await opened(store, persona_id, provider)
    failures = [RuntimeError("hot state gone")]

    async def paused(conversation_id: str) -> bool:
        if failures:
            raise failures.pop()
        return False

    svc.hooks.paused = paused
    with pytest.raises(RuntimeError):
        await svc.submit(session, client_id="c1", text="hello")
    (stored,) = await store.list_messages(TENANT, session.conversation.id, limit=5)
    assert await svc.hot.get(f"pending:{stored.id}") is None
    message, processed = await svc.submit(session, client_id="c1", text="hello")  # the resend
    assert processed and message.id == stored.id
    events = await collect_until_final(svc, session.conversation.id)
    assert events[-1]["type"] == "response.done" and len(provider.calls) == 1
    await svc.shutdown(timeout=5)


class RefusesAnAcknowledgement(InProcessEventLog):
    """A log whose first ``message.accepted`` fails late, after the reply's lock is taken."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = False

    def submit(self, conversation_id: str, event: dict[str, Any]) -> asyncio.Future[Any]:
        if event["type"] != "message.accepted" or self.refused:
            return super().submit(conversation_id, event)
        self.refused = True
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.05, future.set_exception, ConnectionError("gone"))
        return future


async def test_a_message_whose_acknowledgement_failed_is_not_answered_until_resent(
    store: Store, persona_id: str
) -> None:
    """The reply is queued while message.accepted is logged; a failed one drops the message."""
    provider = ScriptedLLM()
    svc = service(store, provider, RefusesAnAcknowledgement())
    session = await svc.open(TENANT, persona=persona_id, user_external_id="alice")
    with pytest.raises(ConnectionError):
        await svc.submit(session, client_id="c1", text="hello")
    await asyncio.sleep(0.1)
    assert provider.calls == []  # the client was told it failed: no reply to it
    (stored,) = await store.list_messages(TENANT, session.conversation.id, limit=5)
    assert await svc.hot.get(f"pending:{stored.id}") is None
    message, processed = await svc.submit(session, client_id="c1", text="hello")  # the resend
    assert processed and message.id == stored.id
    events = await collect_until_final(svc, session.conversation.id)
    assert [e["type"] for e in events][:2] == ["message.accepted", "response.created"]
    assert events[-1]["type"] == "response.done" and len(provider.calls) == 1
    await svc.shutdown(timeout=5)


async def test_a_message_to_a_taken_over_conversation_leaves_no_pending_mark(
    store: Store, persona_id: str
) -> None:
    provider = ScriptedLLM()
    svc, session = await opened(store, persona_id, provider)

    async def paused(conversation_id: str) -> bool:
        return True

    svc.hooks.paused = paused
    message, processed = await svc.submit(session, client_id="c1", text="hello")
    assert processed
    assert await svc.hot.get(f"pending:{message.id}") is None
    await asyncio.sleep(0.05)
    assert provider.calls == []  # the operator answers, not the persona
    await svc.shutdown(timeout=5)


async def test_a_reply_cancelled_while_waiting_for_the_lock_leaves_no_pending_mark(
    store: Store, persona_id: str
) -> None:
    """The marks go with the lock's release; a reply that never got the lock unmarks too."""
    provider = ScriptedLLM()
    svc, session = await opened(store, persona_id, provider)
    conv_id = session.conversation.id
    assert await svc.hot.acquire_lock(f"reply:{conv_id}", "another-replica", 30)
    message, _ = await svc.submit(session, client_id="c1", text="hello")
    assert await svc.hot.get(f"pending:{message.id}") is not None
    runner = svc._runners[conv_id]
    assert runner.task is not None
    await asyncio.sleep(0.1)  # retrying the lock another replica holds
    runner.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner.task
    assert await svc.hot.get(f"pending:{message.id}") is None
    assert await svc.hot.lock_owner(f"reply:{conv_id}") == "another-replica"
    assert provider.calls == []
    await svc.shutdown(timeout=5)


async def test_hooks_see_stored_messages_and_add_context(store: Store, persona_id: str) -> None:
    """after_message runs for the person's message and the stored reply; context blocks
    reach the system prompt; a failing or slow hook never breaks the reply."""
    seen: list[tuple[str, str]] = []
    finished = asyncio.Event()

    async def after(session: Session, message: MessageRecord) -> None:
        seen.append((message.role, message.content))
        if message.role == "assistant":
            finished.set()

    async def broken_after(session: Session, message: MessageRecord) -> None:
        raise RuntimeError("analysis is down")

    async def topics(session: Session, query: str) -> list[str]:
        return [f"Current topics for {session.persona.name}: tides (asked: {query})"]

    async def broken_context(session: Session, query: str) -> list[str]:
        raise RuntimeError("feeds are down")

    async def slow_context(session: Session, query: str) -> list[str]:
        await asyncio.sleep(30)
        return ["never"]

    provider = ScriptedLLM()
    svc = ConversationService(
        store,
        InProcessEventLog(),
        provider,
        TurnSettings(coalesce_seconds=0),
        hooks=ConversationHooks(
            after_message=[broken_after, after],
            context=[broken_context, topics, slow_context],
        ),
    )
    session = await svc.open(TENANT, persona=persona_id, user_external_id="bo")
    await svc.submit(session, client_id="c1", text="what's new?")
    events = await collect_until_final(svc, session.conversation.id)
    assert events[-1]["type"] == "response.done"
    await asyncio.wait_for(finished.wait(), 5)
    assert seen == [("user", "what's new?"), ("assistant", "Hello there!")]
    system = provider.calls[0][0].content
    assert "Current topics for Ada: tides (asked: what's new?)" in system
    assert "never" not in system
