"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server, ...).

Uses the official ``openai`` SDK for the request (auth, retries, status
errors) and reads the Server-Sent Events itself: the SDK builds a pydantic
object per chunk, which was half of the server's CPU when relaying fast
streams; a reply needs one string per chunk (``choices[0].delta.content``).
The read timeout bounds the wait for *each* streamed chunk, so a provider
that stalls mid-reply fails with ``llm_timeout`` instead of hanging the
conversation.
"""

from __future__ import annotations

import asyncio
import json
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
        structured_output: bool = True,
    ) -> None:
        self.model = model
        self.capabilities = Capabilities(
            context_window=context_window, tools=True, structured_output=structured_output
        )
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            # Local servers (Ollama, llama.cpp) accept any key; the SDK insists on one.
            api_key=api_key or "not-needed",
            timeout=openai.Timeout(timeout, connect=connect_timeout),
            max_retries=max_retries,
        )

    async def close(self) -> None:
        await self._client.close()

    def _request(self, messages: list[ChatMessage], params: GenerationParams) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            # The messages go in extra_body, not create(messages=...): create()
            # walks each one through the SDK's TypedDict transform, 1-2 ms per
            # request for a long history, which plain role/content dicts do not need.
            "messages": [],
            "extra_body": {"messages": [{"role": m.role, "content": m.content} for m in messages]},
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            request["stop"] = list(params.stop)
        return request

    async def stream(
        self, messages: list[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[str]:
        request = self._request(messages, params)
        request["stream"] = True
        try:
            # Entering the context sends the request; a non-2xx status raises here.
            async with self._client.chat.completions.with_streaming_response.create(
                **request
            ) as response:
                done = False
                async for data in _sse_data(response.iter_lines()):
                    if done:
                        continue  # read to the end, so the connection is reused
                    if data == "[DONE]":
                        done = True
                        continue
                    piece = _delta_content(data)
                    if piece:
                        yield piece
            # Leaving the context (also on cancel / aclose) closes the response and
            # aborts the HTTP request: a cancelled reply stops costing tokens too.
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise _translate(exc) from exc

    async def complete(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        *,
        json_schema: dict[str, Any] | None = None,
        schema_name: str = "output",
    ) -> str:
        request = self._request(messages, params)
        if json_schema is not None and self.capabilities.structured_output:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "schema": json_schema, "strict": True},
            }
        try:
            completion = await self._client.chat.completions.create(**request)
        except Exception as exc:
            raise _translate(exc) from exc
        if not completion.choices:
            raise LLMError("the language model returned no choices")
        return completion.choices[0].message.content or ""


async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each Server-Sent Event (multi-line data joined by newlines).

    Comment lines and other fields (``event``, ``id``, ``retry``) are skipped:
    chat completion streams carry everything in ``data``.
    """
    parts: list[str] = []
    async for line in lines:
        if not line:
            if parts:
                yield "\n".join(parts)
                parts.clear()
            continue
        if line.startswith("data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(" ") else value)
    if parts:
        yield "\n".join(parts)


def _delta_content(data: str) -> str | None:
    """The text of one ``chat.completion.chunk``; an in-stream error raises."""
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise LLMError("the language model sent a malformed stream chunk") from exc
    if not isinstance(chunk, dict):
        return None
    error = chunk.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else None
        raise LLMError(
            f"the language model failed mid-reply: {message or 'error event in the stream'}"
        )
    choices = chunk.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return None
    delta = choices[0].get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else None


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
