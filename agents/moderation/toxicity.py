"""Toxicity classifiers: an OpenAI-compatible moderation endpoint, or the chat LLM.

None is configured by default (no offline toxicity model ships in a package:
docs/moderation.md). With ``SALON_MODERATION_BASE_URL`` the classifier is the
``POST /v1/moderations`` endpoint, called through the ``openai`` SDK's
moderations API; with ``SALON_MODERATION_CLASSIFIER=llm`` the configured chat
LLM is asked for a structured verdict.

A classifier raises :class:`ToxicityUnavailable` when it cannot answer in
time; the tenant policy's ``toxicity_failure`` decides what that means.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.llm.base import ChatMessage, GenerationParams, LLMProvider


class ToxicityUnavailable(Exception):
    """The classifier failed or timed out."""


@dataclass(frozen=True)
class ToxicityResult:
    flagged: bool
    categories: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)

    def toxic(self, threshold: float | None) -> bool:
        if self.flagged:
            return True
        return threshold is not None and any(v >= threshold for v in self.scores.values())


class ToxicityClassifier(Protocol):
    name: str

    async def classify(self, text: str) -> ToxicityResult: ...

    async def close(self) -> None: ...


class EndpointClassifier:
    """``POST {base_url}/moderations`` in OpenAI's wire format."""

    name = "endpoint"

    def __init__(
        self, base_url: str, api_key: str | None, model: str | None, timeout: float
    ) -> None:
        import openai

        self.model = model
        self.timeout = timeout
        # No SDK retries: a retry would outlast the reply it is meant to guard.
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "unused",
            timeout=openai.Timeout(timeout, connect=min(timeout, 2.0)),
            max_retries=0,
        )

    async def classify(self, text: str) -> ToxicityResult:
        kwargs: dict[str, Any] = {"input": text}
        if self.model:
            kwargs["model"] = self.model
        try:
            response = await asyncio.wait_for(
                self._client.moderations.create(**kwargs), self.timeout
            )
        except Exception as exc:
            raise ToxicityUnavailable(f"moderation endpoint: {type(exc).__name__}") from exc
        flagged = False
        categories: set[str] = set()
        scores: dict[str, float] = {}
        for result in response.results or []:
            flagged = flagged or bool(result.flagged)
            for name, value in _items(result.categories):
                if value:
                    categories.add(name)
            for name, value in _items(result.category_scores):
                if isinstance(value, int | float):
                    scores[name] = max(float(value), scores.get(name, 0.0))
        return ToxicityResult(flagged, sorted(categories), scores)

    async def close(self) -> None:
        await self._client.close()


def _items(obj: Any) -> list[tuple[str, Any]]:
    if obj is None:
        return []
    data = obj.model_dump(by_alias=True) if hasattr(obj, "model_dump") else dict(obj)
    return list(data.items())


_SCHEMA = {
    "type": "object",
    "properties": {
        "toxic": {"type": "boolean"},
        "categories": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["toxic", "categories"],
    "additionalProperties": False,
}
_PROMPT = (
    "You are a content moderator. Decide whether the text below is toxic: harassment, "
    "hate, threats, sexual content involving minors, or encouragement of self-harm or "
    'violence. Answer only with JSON: {"toxic": true|false, "categories": [...]}.'
)


class LLMClassifier:
    """The configured chat LLM as a classifier (structured output)."""

    name = "llm"

    def __init__(self, provider: LLMProvider, timeout: float) -> None:
        self.provider = provider
        self.timeout = timeout

    async def classify(self, text: str) -> ToxicityResult:
        messages = [
            ChatMessage(role="system", content=_PROMPT),
            ChatMessage(role="user", content=text[:4000]),
        ]
        try:
            raw = await asyncio.wait_for(
                self.provider.complete(
                    messages,
                    GenerationParams(max_tokens=60, temperature=0.0),
                    json_schema=_SCHEMA,
                    schema_name="moderation",
                ),
                self.timeout,
            )
            data = json.loads(raw[raw.index("{") : raw.rindex("}") + 1])
        except Exception as exc:
            raise ToxicityUnavailable(f"moderation model: {type(exc).__name__}") from exc
        categories = [str(c) for c in data.get("categories") or [] if isinstance(c, str)]
        return ToxicityResult(bool(data.get("toxic")), categories)

    async def close(self) -> None:
        return None
