"""Fact extraction with the configured LLM and structured output.

Used when the provider declares ``structured_output`` (an OpenAI-compatible
endpoint; the embedded tiny model does not). The model gets the person's new
messages and their live facts (key and text), and answers with JSON that
matches :data:`FACTS_SCHEMA`; keys of known facts are reused for updates, so
"I moved to Berlin" supersedes "lives in Lyon" instead of adding a second home.
What comes back is validated and cleaned (pydantic); a timeout, an error or
an answer that does not validate falls back to the rules, so remembering
never fails because of the model. It runs inside the ``memory.remember``
background job, never in the reply path.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import structlog
from pydantic import BaseModel, Field

from agents.extraction import ExtractedFact, FactExtractor, RuleExtractor, SaidTurn
from agents.llm.base import ChatMessage, GenerationParams, LLMProvider

log = structlog.get_logger(__name__)

MAX_FACTS = 20
MAX_TEXT = 300

FACTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": ["fact", "preference", "event"]},
                    "key": {"type": "string"},
                    "text": {"type": "string"},
                    "importance": {"type": "number"},
                    "message_id": {"type": "string"},
                },
                "required": ["kind", "key", "text", "importance", "message_id"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["facts"],
    "additionalProperties": False,
}

_INSTRUCTIONS = """You maintain the long-term memory of a chat companion about {user}.
From {user}'s new messages, list durable facts {user} states about themself:
identity, home, work, family, pets, health, likes and dislikes, plans and dates.
Skip questions, hypotheticals, jokes, things about other people unless they
concern {user} (e.g. "my sister Ana"), and anything already known unchanged.

For each fact give:
- kind: "fact", "preference" (likes, dislikes, wants) or "event" (dated or planned happenings);
- key: a short stable lowercase id of what the fact is about, e.g. "name", "home",
  "job", "pet:dog", "likes:jazz", "allergy:peanuts". When a fact updates or
  contradicts a known one, reuse the known key exactly;
- text: one sentence in the third person that starts with "{user}";
- importance: 0 to 1 (1 = must never be forgotten, like an allergy or a name);
- message_id: the id of the message that states it.

Answer with JSON only: {{"facts": [...]}}; an empty list when there is nothing new."""


class _Fact(BaseModel):
    kind: Literal["fact", "preference", "event"]
    key: str = Field(min_length=1, max_length=120)
    text: str = Field(min_length=1)
    importance: float
    message_id: str


class _Facts(BaseModel):
    facts: list[_Fact]


_KEY_CHARS = re.compile(r"[^a-z0-9:_\-]+")


def _clean_key(key: str) -> str:
    return _KEY_CHARS.sub("_", key.strip().lower()).strip("_")[:80]


class LLMExtractor(FactExtractor):
    """Structured-output extraction with a rule-based fallback."""

    name = "llm"

    def __init__(
        self,
        provider: LLMProvider,
        *,
        timeout_seconds: float = 30.0,
        max_tokens: int = 800,
        fallback: FactExtractor | None = None,
    ) -> None:
        self.provider = provider
        self.timeout_seconds = timeout_seconds
        self.max_tokens = max_tokens
        self.fallback = fallback or RuleExtractor()

    def messages(
        self, turns: Sequence[SaidTurn], *, user: str, known: Mapping[str, str]
    ) -> list[ChatMessage]:
        """The request: instructions, then known facts and the new messages."""
        known_lines = "\n".join(f"- {key}: {text}" for key, text in known.items()) or "(none)"
        said = "\n".join(f"[{t.id}] {t.content}" for t in turns)
        return [
            ChatMessage("system", _INSTRUCTIONS.format(user=user)),
            ChatMessage(
                "user", f"Known facts:\n{known_lines}\n\nNew messages from {user}:\n{said}"
            ),
        ]

    async def extract(
        self, turns: Sequence[SaidTurn], *, user: str, known: Mapping[str, str]
    ) -> list[tuple[ExtractedFact, str]]:
        if not turns:
            return []
        try:
            raw = await asyncio.wait_for(
                self.provider.complete(
                    self.messages(turns, user=user, known=known),
                    GenerationParams(max_tokens=self.max_tokens, temperature=0.0, top_p=1.0),
                    json_schema=FACTS_SCHEMA,
                    schema_name="memory_facts",
                ),
                self.timeout_seconds,
            )
            parsed = _Facts.model_validate_json(_strip_fences(raw))
        except Exception as exc:  # TimeoutError included: never fail, fall back
            log.warning("llm_extraction_failed", error=repr(exc), fallback=self.fallback.name)
            return await self.fallback.extract(turns, user=user, known=known)
        ids = {t.id for t in turns}
        facts: dict[str, tuple[ExtractedFact, str]] = {}
        for item in parsed.facts[:MAX_FACTS]:
            key = _clean_key(item.key)
            text = " ".join(item.text.split())[:MAX_TEXT]
            if not key or not text:
                continue
            # A made-up message id still belongs to this batch: the last message.
            source = item.message_id if item.message_id in ids else turns[-1].id
            importance = min(1.0, max(0.0, item.importance))
            facts[key] = (ExtractedFact(item.kind, key, text, importance), source)
        return list(facts.values())


def _strip_fences(raw: str) -> str:
    """Models without enforced schemas sometimes wrap JSON in a Markdown fence."""
    text = raw.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


__all__ = ["FACTS_SCHEMA", "LLMExtractor"]
