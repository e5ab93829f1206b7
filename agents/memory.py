"""Long-term memory in conversations: recall before a reply, remember after it.

Recall runs inside the reply path with a short timeout (a slow or cold
embedder never delays a reply: it answers without memories). Remembering
runs as a background job after the reply: each turn becomes an episodic
``turn`` item, and facts the person states about themself become ``fact``/
``preference``/``event`` items (extracted by the configured LLM with
structured output when it can, agents/extraction_llm.py, else by rules,
agents/extraction.py); a fact with the same key as a live one supersedes it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog

from agents.extraction import FactExtractor, RuleExtractor, SaidTurn
from memory.embeddings.base import Embedder
from memory.memories import MemoryStore, NewMemory
from memory.retrieval import search

log = structlog.get_logger(__name__)

KEY_PREFIX = "key:"


@dataclass
class MemorySettings:
    recall_k: int = 6
    recall_token_budget: int = 300
    recall_timeout_seconds: float = 1.5


class MemoryService:
    def __init__(
        self,
        memories: MemoryStore,
        embedder: Embedder | None,
        settings: MemorySettings | None = None,
        extractor: FactExtractor | None = None,
    ) -> None:
        self.memories = memories
        self.embedder = embedder
        self.settings = settings or MemorySettings()
        self.extractor = extractor or RuleExtractor()

    async def recall(self, tenant_id: str, persona_id: str, user_id: str, query: str) -> list[str]:
        """Memory texts for the prompt: pinned first, then the most relevant, within budget."""
        try:
            found = await asyncio.wait_for(
                search(
                    self.memories,
                    self.embedder,
                    tenant_id,
                    persona_id,
                    user_id,
                    query,
                    k=self.settings.recall_k,
                    token_budget=self.settings.recall_token_budget,
                    kinds=("fact", "preference", "event", "summary", "turn"),
                ),
                self.settings.recall_timeout_seconds,
            )
        except Exception as exc:  # memory must never break a reply
            log.warning("recall_failed", error=repr(exc))
            return []
        return [item.memory.text for item in found]

    async def remember(
        self,
        tenant_id: str,
        *,
        persona_id: str,
        user_id: str,
        user_name: str,
        persona_name: str,
        turns: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """Store turns (``[{id, role, content}]``) and the facts stated in them."""
        items: list[NewMemory] = []
        for turn in turns:
            speaker = user_name if turn["role"] == "user" else persona_name
            items.append(
                NewMemory(
                    persona_id=persona_id,
                    user_id=user_id,
                    kind="turn",
                    text=f"{speaker}: {turn['content']}",
                    importance=0.3,
                    source_message_ids=(turn["id"],),
                )
            )
        live = await self.memories.list(
            tenant_id,
            persona_id=persona_id,
            user_id=user_id,
            kind=("fact", "preference", "event"),
            limit=100_000,
        )
        by_key = {ref: m for m in live for ref in m.source_refs if ref.startswith(KEY_PREFIX)}
        facts = await self.extractor.extract(
            [SaidTurn(t["id"], t["content"]) for t in turns if t["role"] == "user"],
            user=user_name,
            known={ref[len(KEY_PREFIX) :]: m.text for ref, m in by_key.items()},
        )
        embeddings: list[list[float]] = []
        if self.embedder is not None:
            texts = [i.text for i in items] + [f.text for f, _ in facts]
            try:
                embeddings = await self.embedder.embed(texts)
            except Exception as exc:  # keyword recall still finds them; never lose a memory
                log.warning("memory_embedding_failed", error=repr(exc))
        model = self.embedder.model if self.embedder is not None else None

        def vector(i: int) -> list[float] | None:
            return embeddings[i] if embeddings else None

        await self.memories.add_many(
            tenant_id,
            [
                NewMemory(**{**item.__dict__, "embedding": vector(i), "embedding_model": model})
                for i, item in enumerate(items)
            ],
        )
        added = superseded = 0
        for n, (fact, message_id) in enumerate(facts):
            ref = KEY_PREFIX + fact.key
            old = by_key.get(ref)
            emb = vector(len(items) + n)
            if old is not None and old.text == fact.text:
                continue
            if old is not None:
                await self.memories.supersede(
                    tenant_id,
                    old.id,
                    text=fact.text,
                    kind=fact.kind,
                    importance=fact.importance,
                    source_message_ids=(message_id,),
                    source_refs=(ref,),
                    embedding=emb,
                    embedding_model=model,
                )
                superseded += 1
            else:
                await self.memories.add(
                    tenant_id,
                    persona_id=persona_id,
                    user_id=user_id,
                    text=fact.text,
                    kind=fact.kind,
                    importance=fact.importance,
                    source_message_ids=(message_id,),
                    source_refs=(ref,),
                    embedding=emb,
                    embedding_model=model,
                )
                added += 1
        return {
            "turns": len(items),
            "facts_added": added,
            "facts_superseded": superseded,
            "extractor": self.extractor.name,
        }


def register_memory_jobs(runner: Any, service: MemoryService) -> None:
    """``memory.remember``: store finished turns; ``memory.reembed`` (servers and workers alike)."""
    if service.embedder is not None:
        from agents.reembed import register_reembed_job

        register_reembed_job(runner, service.memories, service.embedder)

    async def remember(ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
        return await service.remember(
            args["tenant_id"],
            persona_id=args["persona_id"],
            user_id=args["user_id"],
            user_name=args["user_name"],
            persona_name=args["persona_name"],
            turns=args["turns"],
        )

    runner.register("memory.remember", remember)


def build_embedder(
    *,
    provider: str | None,
    base_url: str | None,
    api_key: str | None,
    model: str | None,
    dimensions: int | None,
    timeout: float,
) -> Embedder | None:
    """The configured embedder; ``provider="none"`` gives keyword-only recall."""
    if provider == "none":
        return None
    from memory.embeddings.registry import create_embedder

    return create_embedder(
        provider=provider,
        base_url=base_url,
        api_key=api_key,
        model=model,
        dimensions=dimensions,
        timeout=timeout,
    )
