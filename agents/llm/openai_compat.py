"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server, ...).

Streamed replies (the hot path: every reply of every conversation) are one
POST with httpx, the HTTP client the official SDK is built on, and the
Server-Sent Events are read here: the SDK built a pydantic object per chunk
(once half of the server's CPU when relaying fast streams), and its request
path (options, transforms, auth hooks, retries) cost ~0.4 ms of CPU and
~0.3 ms before the request left, per reply. A reply needs one string per
chunk (``choices[0].delta.content``). Retries match the SDK's policy for
requests: connection failures and HTTP 408/409/429/5xx before any byte of
the reply, ``max_retries`` times, with backoff (``Retry-After`` honoured up
to a limit). Non-streamed completions (summaries, extraction) still go
through the SDK.

The read timeout bounds the wait for *each* streamed chunk, so a provider
that stalls mid-reply fails with ``llm_timeout`` instead of hanging the
conversation.
"""

from __future__ import annotations

import asyncio
import json
import random
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
        self.max_retries = max_retries
        self._http = httpx2.AsyncClient(
            base_url=self._client.base_url,  # as the SDK resolved it (OPENAI_BASE_URL too)
            timeout=httpx2.Timeout(timeout, connect=connect_timeout),
            # The SDK's pool (1,000 connections): each streaming reply holds one
            # for its whole length, and httpx's own default of 100 would queue the rest.
            limits=openai.DEFAULT_CONNECTION_LIMITS,
            headers={
                "Authorization": f"Bearer {self._client.api_key}",
                "Accept": "text/event-stream",
                "User-Agent": "salon",
            },
        )

    async def close(self) -> None:
        await self._http.aclose()
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
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        content = json.dumps(body).encode()
        response: httpx2.Response | None = None
        try:
            response = await self._open_stream(content)
            done = False
            async for data in _sse_data(response.aiter_lines()):
                if done:
                    continue  # read to the end, so the connection is reused
                if data == "[DONE]":
                    done = True
                    continue
                piece = _delta_content(data)
                if piece:
                    yield piece
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise _translate(exc) from exc
        finally:
            # Also on cancel / aclose: closing an unfinished response aborts the
            # HTTP request, so a cancelled reply stops costing tokens too.
            if response is not None:
                await response.aclose()

    async def _open_stream(self, content: bytes) -> httpx2.Response:
        """POST the request; retry what the SDK retries before the reply starts."""
        attempt = 0
        while True:
            request = self._http.build_request(
                "POST",
                "chat/completions",
                content=content,
                headers={"Content-Type": "application/json"},
            )
            try:
                response = await self._http.send(request, stream=True)
            except (httpx2.ConnectError, httpx2.ConnectTimeout):
                if attempt >= self.max_retries:
                    raise
                await asyncio.sleep(_backoff(attempt, None))
                attempt += 1
                continue
            status = response.status_code
            if status < 400:
                return response
            await response.aclose()
            if attempt < self.max_retries and (status in _RETRY_STATUS or status >= 500):
                await asyncio.sleep(_backoff(attempt, response.headers.get("retry-after")))
                attempt += 1
                continue
            raise LLMError(f"the language model endpoint answered HTTP {status}", code="llm_error")

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


_RETRY_STATUS = frozenset({408, 409, 429})


def _backoff(attempt: int, retry_after: str | None) -> float:
    """Seconds before retry number ``attempt + 1``: the server's word (up to 8 s), else
    0.5 s doubling up to 8 s, with up to 25 % jitter (the SDK's schedule)."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), 8.0)
        except ValueError:
            pass
    return min(0.5 * 2**attempt, 8.0) * (1 - 0.25 * random.random())


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
