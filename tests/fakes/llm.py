"""Fake LLM providers: subclasses of the real base, for socket-free tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agents.llm.base import ChatMessage, GenerationParams, LLMError, LLMProvider


class ScriptedLLM(LLMProvider):
    """Streams ``pieces`` with ``delay`` between them; can fail after ``fail_after`` pieces."""

    name = "scripted"

    def __init__(
        self,
        pieces: list[str] | None = None,
        *,
        delay: float = 0.0,
        fail_after: int | None = None,
        error: Exception | None = None,
    ) -> None:
        self.pieces = pieces if pieces is not None else ["Hel", "lo", " there", "!"]
        self.delay = delay
        self.fail_after = fail_after
        self.error = error or LLMError("provider exploded", code="llm_error")
        self.calls: list[list[ChatMessage]] = []
        self.closed_streams = 0
        self.finished_streams = 0

    async def stream(
        self, messages: list[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[str]:
        self.calls.append(messages)
        try:
            for i, piece in enumerate(self.pieces):
                if self.fail_after is not None and i == self.fail_after:
                    raise self.error
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield piece
            self.finished_streams += 1
        finally:
            self.closed_streams += 1
