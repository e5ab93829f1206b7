"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server, ...).

Uses the official ``openai`` SDK. The read timeout bounds the wait for *each*
streamed chunk, so a provider that stalls mid-reply fails with
``llm_timeout`` instead of hanging the conversation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2  # the HTTP client the openai SDK (3.x) is built on
import openai

from agents.llm.base import (
    Capabilities,
    ChatMessage,
    GenerationParams,
    LLMError,
    LLMProvider,
    LLMTimeout,
)


class OpenAICompatibleProvider(LLMProvider):
    name = "openai"

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        model: str,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_retries: int = 1,
        context_window: int = 8192,
    ) -> None:
        self.model = model
        self.capabilities = Capabilities(context_window=context_window, tools=True)
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            # Local servers (Ollama, llama.cpp) accept any key; the SDK insists on one.
            api_key=api_key or "not-needed",
            timeout=openai.Timeout(timeout, connect=connect_timeout),
            max_retries=max_retries,
        )

    async def close(self) -> None:
        await self._client.close()

    async def stream(
        self, messages: list[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[str]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            request["stop"] = list(params.stop)
        try:
            stream = await self._client.chat.completions.create(**request)
        except Exception as exc:
            raise _translate(exc) from exc
        try:
            async for chunk in stream:
                if not chunk.choices:
                    continue
                piece = chunk.choices[0].delta.content
                if piece:
                    yield piece
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise _translate(exc) from exc
        finally:
            # Closing the response aborts the HTTP request: a cancelled reply
            # stops costing tokens on the provider's side too.
            await stream.close()


def _translate(exc: Exception) -> LLMError:
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return LLMTimeout()
    if isinstance(exc, openai.APIStatusError):
        return LLMError(
            f"the language model endpoint answered HTTP {exc.status_code}", code="llm_error"
        )
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return LLMError("could not reach the language model endpoint", code="llm_unavailable")
    return LLMError(f"the language model failed: {type(exc).__name__}", code="llm_error")
