"""Two conversation services ("replicas") sharing one hot state and event log, no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agents.conversations import ConversationService, TurnSettings
from agents.personas import create_persona
from memory.db import create_engine, normalize_database_url
from memory.eventlog import InProcessEventLog
from memory.hotstate import InProcessHotState
from memory.migrate import migrate
from memory.store import Store
from tests.fakes.llm import ScriptedLLM

TENANT = "ten_r"
FINALS = ("response.done", "response.cancelled", "error")


class Dies:
    """Forwards to a shared backend until the replica 'dies'; then every call fails."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self.dead = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise ConnectionError("this replica is dead")
            return attr(*args, **kwargs)

        return call


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(create_engine(normalize_database_url(None, tmp_path)))
    await migrate(s.engine)
    await s.create_tenant("t", tenant_id=TENANT)
    yield s
    await s.close()


def replica(
    store: Store, hot: Any, events: Any, provider: ScriptedLLM, name: str
) -> ConversationService:
    settings = TurnSettings(coalesce_seconds=0, lock_ttl_seconds=0.6)
    return ConversationService(store, events, provider, settings, hot=hot, replica_id=name)


def finals_for(events: list[dict[str, Any]], response_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] in FINALS and e.get("response_id") == response_id]


async def wait_until(predicate: Any, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def test_a_dead_replicas_reply_is_ended_when_another_waits_for_the_lock(store: Store) -> None:
    hot, log = InProcessHotState(), InProcessEventLog()
    persona = await create_persona(store, TENANT, {"name": "Ada"})
    hot_a, log_a = Dies(hot), Dies(log)
    a = replica(store, hot_a, log_a, ScriptedLLM(["w "] * 500, delay=0.01), "a")
    b = replica(store, hot, log, ScriptedLLM(["fine"]), "b")
    session_a = await a.open(TENANT, persona=persona.id, user_external_id="u")
    conv = session_a.conversation.id
    await a.submit(session_a, client_id="1", text="long one")

    async def deltas() -> bool:
        return sum(e["type"] == "response.text.delta" for e in await log.replay(conv, 0)) >= 3

    await wait_until(deltas)
    response_a = next(e for e in await log.replay(conv, 0) if e["type"] == "response.created")[
        "response_id"
    ]
    hot_a.dead = log_a.dead = True  # replica A vanishes mid-reply, without cleaning up

    session_b = await b.open(TENANT, persona=persona.id, user_external_id="u", conversation_id=conv)
    await b.submit(session_b, client_id="2", text="hello?")  # waits for A's lock to expire

    async def b_replied() -> bool:
        return any(e["type"] == "response.done" for e in await log.replay(conv, 0))

    await wait_until(b_replied)
    events = await log.replay(conv, 0)
    ended = finals_for(events, response_a)
    assert [e["code"] for e in ended] == ["interrupted"]
    assert events.index(ended[0]) < events.index(
        next(e for e in events if e["type"] == "response.done")
    )
    stored = [(m.role, m.status) for m in await store.list_messages(TENANT, conv)]
    # A's partial reply is stored once, as an error: by A itself when its Redis calls start
    # failing (its database still answers) or by B's recovery after A's lock expired, so it
    # may land before or after B's message; B's own reply comes last either way.
    assert sorted(stored) == [
        ("assistant", "complete"),
        ("assistant", "error"),
        ("user", "complete"),
        ("user", "complete"),
    ]
    assert stored[0] == ("user", "complete") and stored[-1] == ("assistant", "complete")
    await b.shutdown(timeout=2)


async def test_a_live_reply_whose_lock_expired_stops_and_is_not_finished_twice(
    store: Store,
) -> None:
    hot, log = InProcessHotState(), InProcessEventLog()
    persona = await create_persona(store, TENANT, {"name": "Ada"})
    a = replica(store, hot, log, ScriptedLLM(["w "] * 500, delay=0.01), "a")
    b = replica(store, hot, log, ScriptedLLM(["fine"]), "b")
    await a.start()
    await b.start()
    session = await a.open(TENANT, persona=persona.id, user_external_id="u")
    conv = session.conversation.id
    await a.submit(session, client_id="1", text="long one")

    async def started() -> bool:
        return any(e["type"] == "response.text.delta" for e in await log.replay(conv, 0))

    await wait_until(started)
    # A stalls (e.g. a long Redis pause) and its lock expires under it;
    # B sees the reply as orphaned and ends it.
    hot._locks.clear()
    session_b = await b.open(TENANT, persona=persona.id, user_external_id="u", conversation_id=conv)
    assert session_b.conversation.id == conv

    async def a_stopped() -> bool:
        return a._runners.get(conv) is None

    await wait_until(a_stopped)
    events = await log.replay(conv, 0)
    response_a = next(e for e in events if e["type"] == "response.created")["response_id"]
    assert [e.get("code", e["type"]) for e in finals_for(events, response_a)] == ["interrupted"]
    stored = [m for m in await store.list_messages(TENANT, conv) if m.role == "assistant"]
    assert len(stored) == 1 and stored[0].status == "error"  # stored once, by B
    await a.shutdown(timeout=2)
    await b.shutdown(timeout=2)


async def test_a_message_whose_acknowledgement_failed_is_answered_on_resend(store: Store) -> None:
    hot, log = InProcessHotState(), InProcessEventLog()
    persona = await create_persona(store, TENANT, {"name": "Ada"})
    flaky = Dies(log)
    provider = ScriptedLLM(["ok"])
    svc = replica(store, hot, flaky, provider, "a")
    session = await svc.open(TENANT, persona=persona.id, user_external_id="u")
    flaky.dead = True
    with pytest.raises(ConnectionError):
        await svc.submit(session, client_id="x", text="hello")
    flaky.dead = False
    _, processed = await svc.submit(session, client_id="x", text="hello")  # the client's resend
    assert processed

    async def answered() -> bool:
        return any(
            e["type"] == "response.done" for e in await log.replay(session.conversation.id, 0)
        )

    await wait_until(answered)
    assert len(provider.calls) == 1
