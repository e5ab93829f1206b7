"""Fact extraction with the configured LLM (structured output) and its fallback to rules.

The provider is either a subclass of the real LLM base (socket-free) or the
real OpenAI-compatible provider against the loopback fake, which checks the
wire format: ``response_format`` with the facts JSON schema.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agents.extraction import RuleExtractor, SaidTurn
from agents.extraction_llm import FACTS_SCHEMA, LLMExtractor
from agents.llm.base import ChatMessage, GenerationParams, LLMError, LLMProvider
from agents.llm.openai_compat import OpenAICompatibleProvider
from agents.memory import MemoryService
from memory.memories import MemoryStore
from memory.store import Store
from tests.fakes.openai_server import FakeOpenAI
from tests.test_store_contract import STORE_BACKENDS


class JsonLLM(LLMProvider):
    """Answers ``complete`` with scripted strings (or raises / stalls)."""

    name = "json-fake"

    def __init__(self, *answers: str | Exception, stall: bool = False) -> None:
        self.answers = list(answers)
        self.stall = stall
        self.requests: list[tuple[list[ChatMessage], dict[str, Any] | None]] = []

    async def stream(
        self, messages: list[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[str]:
        yield "unused"

    async def complete(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        *,
        json_schema: dict[str, Any] | None = None,
        schema_name: str = "output",
    ) -> str:
        self.requests.append((messages, json_schema))
        if self.stall:
            await asyncio.sleep(3600)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _facts(*facts: dict[str, Any]) -> str:
    return json.dumps({"facts": list(facts)})


TURNS = [SaidTurn("m1", "Hey, I moved to Berlin last week."), SaidTurn("m2", "Still love jazz.")]


async def test_llm_facts_are_cleaned_and_keyed() -> None:
    llm = JsonLLM(
        _facts(
            {
                "kind": "fact",
                "key": " Home ",
                "text": "Bob  lives in Berlin.",
                "importance": 0.8,
                "message_id": "m1",
            },
            {
                "kind": "preference",
                "key": "likes: jazz",
                "text": "Bob loves jazz.",
                "importance": 7,  # out of range: clamped
                "message_id": "invented",  # not in the batch: the last message
            },
        )
    )
    got = await LLMExtractor(llm).extract(TURNS, user="Bob", known={"home": "Bob lives in Lyon"})
    assert [(f.kind, f.key, f.text, f.importance, src) for f, src in got] == [
        ("fact", "home", "Bob lives in Berlin.", 0.8, "m1"),
        ("preference", "likes:_jazz", "Bob loves jazz.", 1.0, "m2"),
    ]
    messages, schema = llm.requests[0]
    assert schema == FACTS_SCHEMA
    prompt = messages[-1].content
    assert "- home: Bob lives in Lyon" in prompt  # known keys are offered for reuse
    assert "[m1] Hey, I moved to Berlin last week." in prompt


@pytest.mark.parametrize(
    "answer",
    [
        "not json at all",
        '{"facts": [{"kind": "opinion", "key": "x", "text": "t", "importance": 1, '
        '"message_id": "m1"}]}',  # a kind outside the schema
        '{"something": []}',
        LLMError("boom"),
    ],
)
async def test_bad_answers_fall_back_to_rules(answer: str | Exception) -> None:
    got = await LLMExtractor(JsonLLM(answer)).extract(
        [SaidTurn("m1", "I live in Lyon.")], user="Bob", known={}
    )
    rules = await RuleExtractor().extract([SaidTurn("m1", "I live in Lyon.")], user="Bob", known={})
    assert [(f.key, f.text) for f, _ in got] == [(f.key, f.text) for f, _ in rules]
    assert got and got[0][0].text == "Bob lives in Lyon"


async def test_a_stalled_model_times_out_and_falls_back() -> None:
    extractor = LLMExtractor(JsonLLM(stall=True), timeout_seconds=0.1)
    got = await asyncio.wait_for(
        extractor.extract([SaidTurn("m1", "My name is Ada.")], user="Ada", known={}), 5
    )
    assert [f.key for f, _ in got] == ["name"]


async def test_fenced_json_is_accepted() -> None:
    fenced = (
        "```json\n"
        + _facts(
            {"kind": "event", "key": "trip", "text": "Bob flies to Oslo", "importance": 0.5}
            | {"message_id": "m1"}
        )
        + "\n```"
    )
    got = await LLMExtractor(JsonLLM(fenced)).extract(TURNS, user="Bob", known={})
    assert [f.key for f, _ in got] == ["trip"]


async def test_openai_provider_sends_the_schema_as_response_format(fake_llm: FakeOpenAI) -> None:
    provider = OpenAICompatibleProvider(
        base_url=fake_llm.base_url, api_key="k", model="fake", max_retries=0
    )
    fake_llm.json_replies.append(
        _facts(
            {
                "kind": "fact",
                "key": "home",
                "text": "Bob lives in Berlin",
                "importance": 0.8,
                "message_id": "m1",
            }
        )
    )
    try:
        got = await LLMExtractor(provider).extract(TURNS, user="Bob", known={})
    finally:
        await provider.close()
    assert [(f.key, src) for f, src in got] == [("home", "m1")]
    body = fake_llm.requests[-1]
    assert not body.get("stream")
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "memory_facts"
    assert body["response_format"]["json_schema"]["schema"] == FACTS_SCHEMA
    assert body["messages"][0]["role"] == "system"


async def test_providers_without_structured_output_ignore_the_schema(
    fake_llm: FakeOpenAI,
) -> None:
    provider = OpenAICompatibleProvider(
        base_url=fake_llm.base_url, api_key="k", model="m", max_retries=0, structured_output=False
    )
    try:
        text = await provider.complete(
            [ChatMessage("user", "hi")], GenerationParams(), json_schema=FACTS_SCHEMA
        )
    finally:
        await provider.close()
    assert text == "Hello from the fake model."
    assert "response_format" not in fake_llm.requests[-1]


@pytest.fixture(params=list(STORE_BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with STORE_BACKENDS[request.param](request, tmp_path) as s:
        yield s


async def test_remember_with_llm_supersedes_by_reused_key(store: Store) -> None:
    tenant = (await store.create_tenant("t")).id
    persona = await store.create_persona(tenant, slug="p", name="P", data={})
    user = await store.get_or_create_user(tenant, "bob", "Bob")
    llm = JsonLLM(
        _facts(
            {
                "kind": "fact",
                "key": "home",
                "text": "Bob lives in Lyon",
                "importance": 0.8,
                "message_id": "m1",
            }
        ),
        _facts(
            {
                "kind": "fact",
                "key": "home",
                "text": "Bob moved to Berlin",
                "importance": 0.8,
                "message_id": "m3",
            }
        ),
    )
    memories = MemoryStore(store)
    service = MemoryService(memories, None, extractor=LLMExtractor(llm))
    common = {"persona_id": persona.id, "user_id": user.id, "user_name": "Bob", "persona_name": "P"}
    first = await service.remember(
        tenant, turns=[{"id": "m1", "role": "user", "content": "I'm in Lyon"}], **common
    )
    second = await service.remember(
        tenant,
        turns=[
            {"id": "m3", "role": "user", "content": "Packed up, now in Berlin"},
            {"id": "m4", "role": "assistant", "content": "Welcome to Berlin!"},
        ],
        **common,
    )
    assert (first["facts_added"], second["facts_superseded"]) == (1, 1)
    assert second["extractor"] == "llm"
    # The second request offered the first fact's key for reuse.
    assert "- home: Bob lives in Lyon" in llm.requests[1][0][-1].content
    # Only the person's messages go to the extractor, not the persona's.
    assert "Welcome to Berlin" not in llm.requests[1][0][-1].content
    live = await memories.list(tenant, persona_id=persona.id, user_id=user.id, kind="fact")
    assert [m.text for m in live] == ["Bob moved to Berlin"]
