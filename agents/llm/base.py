"""LLM provider base: stream a chat completion as text pieces.

One small base, one module per implementation, chosen by configuration
through :mod:`agents.llm.registry`. Providers raise :class:`LLMError` (with a
stable ``code``) for every failure, including a stall mid-stream, so the turn
engine can end the reply with a clear ``error`` event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do, declared as data."""

    context_window: int = 4096
    streaming: bool = True
    local: bool = False
    tools: bool = False
    # Answers constrained to a JSON schema (OpenAI ``response_format``
    # json_schema): fact extraction uses the LLM only when this is true.
    structured_output: bool = False
    extra: dict[str, object] = field(default_factory=dict)


class LLMError(Exception):
    """A provider failed; ``code`` is what clients see in the ``error`` event."""

    def __init__(self, message: str, *, code: str = "llm_error") -> None:
        super().__init__(message)
        self.code = code


class LLMTimeout(LLMError):
    def __init__(self, message: str = "the language model did not answer in time") -> None:
        super().__init__(message, code="llm_timeout")


class LLMProvider(ABC):
    """Stream replies for a list of chat messages."""

    name: str = "base"
    capabilities: Capabilities = Capabilities()

    async def start(self) -> None:
        """Load models or open clients; called once before the first stream."""

    async def close(self) -> None:
        """Release what :meth:`start` acquired."""

    @abstractmethod
    def stream(self, messages: list[ChatMessage], params: GenerationParams) -> AsyncIterator[str]:
        """Yield pieces of the reply as they are produced.

        Cancelling the consuming task (``aclose`` on the iterator) must stop the
        underlying generation or request promptly.
        """

    async def complete(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        *,
        json_schema: dict[str, Any] | None = None,
        schema_name: str = "output",
    ) -> str:
        """The whole reply as one string (background work: summaries, extraction).

        ``json_schema`` asks for an answer that matches it; providers whose
        capabilities say ``structured_output`` enforce it, the others ignore it
        (callers validate what comes back either way).
        """
        pieces = [piece async for piece in self.stream(messages, params)]
        return "".join(pieces)

    def count_tokens(self, text: str) -> int:
        """An estimate of tokens in ``text``; providers with a tokenizer override it."""
        return max(1, len(text) // 4)
