"""Long-term memory through a real server: remembered across conversations, superseded, forgotten."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, connect
from tests.fakes.openai_server import FakeOpenAI


async def _say(server: ServerProcess, persona: dict[str, Any], user: str, text: str) -> None:
    c = await connect(server)
    await c.start(persona["id"], user=user)  # a NEW conversation each time
    await c.send({"type": "message.create", "id": "m", "text": text})
    await c.until("response.done", timeout=30)
    await c.close()


def _recalled(fake: FakeOpenAI) -> list[str]:
    """The memory lines of the system prompt the model received last."""
    system = fake.requests[-1]["messages"][0]["content"]
    if "remembers about" not in system:
        return []
    section = system.split("remembers about", 1)[1].split("\n")[1:]
    return [line[2:] for line in section if line.startswith("- ")]


async def _wait_for_fact(server: ServerProcess, user: str, text: str) -> list[dict[str, Any]]:
    memories: list[dict[str, Any]] = []
    for _ in range(200):
        r = httpx.get(f"{server.url}/v1/users/{user}/export", headers=server.auth, timeout=10)
        memories = r.json()["memories"]
        if any(m["text"] == text and m["valid_to"] is None for m in memories):
            return memories
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} was never remembered: {memories}")


@pytest.mark.slow
@pytest.mark.parametrize("embeddings", ["local", "none"])
async def test_a_persona_remembers_a_person_across_conversations(
    make_server: Any, fake_llm: FakeOpenAI, embeddings: str
) -> None:
    srv: ServerProcess = make_server(SALON_EMBEDDINGS_PROVIDER=embeddings)
    p = srv.create_persona(name="Ada")
    await _say(srv, p, "rob", "Hi! My name is Robert and I live in Lyon.")
    memories = await _wait_for_fact(srv, "rob", "rob lives in Lyon")
    assert any(m["kind"] == "turn" and "I live in Lyon" in m["text"] for m in memories)

    # a brand-new conversation: the persona's prompt carries what it remembers
    await _say(srv, p, "rob", "where do I live?")
    assert "rob lives in Lyon" in _recalled(fake_llm)
    if embeddings == "local":  # related by meaning, not by keyword
        assert "rob's name is Robert" in _recalled(fake_llm)

    # a changed fact supersedes the old one instead of duplicating it
    await _say(srv, p, "rob", "I live in Paris now.")
    memories = await _wait_for_fact(srv, "rob", "rob lives in Paris now")
    old = next(m for m in memories if m["text"] == "rob lives in Lyon")
    assert old["valid_to"] is not None and old["superseded_by"]
    await _say(srv, p, "rob", "and where now?")
    recalled = _recalled(fake_llm)
    assert "rob lives in Paris now" in recalled and "rob lives in Lyon" not in recalled

    # someone else's memories never leak in
    await _say(srv, p, "eve", "who am I?")
    assert not any("rob" in line or "Robert" in line for line in _recalled(fake_llm))

    # forgetting the person removes the memories too
    r = httpx.delete(f"{srv.url}/v1/users/rob/data", headers=srv.auth)
    assert r.status_code == 200 and r.json()["deleted"]["memories"] >= 4
    await _say(srv, p, "rob", "do you know me?")
    assert not any("Robert" in line or "Lyon" in line for line in _recalled(fake_llm))


async def test_facts_are_extracted_by_the_configured_llm(
    make_server: Any, fake_llm: FakeOpenAI
) -> None:
    """SALON_MEMORY_EXTRACTOR=auto with an OpenAI-compatible endpoint: the remember
    job asks the model for facts (json_schema) and stores what it answers."""
    srv: ServerProcess = make_server(SALON_MEMORY_EXTRACTOR="auto")
    p = srv.create_persona(name="Ada")
    fake_llm.json_replies.append(
        '{"facts": [{"kind": "preference", "key": "likes:bouldering", '
        '"text": "kim loves bouldering on weekends", "importance": 0.6, "message_id": "?"}]}'
    )
    # No rule matches this sentence: only the model can find the fact.
    await _say(srv, p, "kim", "Weekends are for the climbing gym, bouldering mostly.")
    memories = await _wait_for_fact(srv, "kim", "kim loves bouldering on weekends")
    fact = next(m for m in memories if m["kind"] == "preference")
    assert fact["importance"] == pytest.approx(0.6)
    asked = [r for r in fake_llm.requests if r.get("response_format")]
    assert asked and asked[-1]["response_format"]["json_schema"]["name"] == "memory_facts"
    assert "bouldering mostly" in asked[-1]["messages"][-1]["content"]
