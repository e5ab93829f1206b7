"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server, ...).

Streamed replies (the hot path: every reply of every conversation) are one
POST with aiohttp (the SDK's own optional transport, ``openai[aiohttp]``),
and the Server-Sent Events are read here. Why not through the SDK and httpx:
the SDK built a pydantic object per chunk (once half of the server's CPU when
relaying fast streams), its request path cost ~0.4 ms of CPU per reply, and
httpx's connection pool scans every pooled connection on each request and
release, which with hundreds of replies streaming at once cost milliseconds
of CPU per reply (3-8 ms at 500-1,000 concurrent streams, against ~0.4 ms
with aiohttp, whose HTTP parser is in C). A reply needs one string per
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

import aiohttp
import openai
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

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
        self._url = str(self._client.base_url).rstrip("/") + "/chat/completions"
        self._headers = {
            # The key as the SDK resolved it (OPENAI_API_KEY too), like the base URL.
            "Authorization": f"Bearer {self._client.api_key}",
            "Accept": "text/event-stream",
            "Content-Type": "application/json",
            "User-Agent": "salon",
        }
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=connect_timeout, sock_read=timeout
        )
        self._http: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proxy: Any = None
        self._proxy_auth: aiohttp.BasicAuth | None = None

    def _session(self) -> aiohttp.ClientSession:
        """The streaming session, made on first use (aiohttp binds it to the running loop)."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http.closed or self._loop is not loop:
            self._loop = loop
            self._http = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                # The SDK's pool size (1,000): each streaming reply holds a
                # connection for its whole length.
                connector=aiohttp.TCPConnector(
                    limit=openai.DEFAULT_CONNECTION_LIMITS.max_connections or 1000,
                    limit_per_host=0,
                ),
                # Not trust_env: with it aiohttp reads ~/.netrc in a worker thread on
                # EVERY request (a thread hop before each reply's first token). The
                # proxy from HTTP(S)_PROXY / NO_PROXY, as the SDK honours them, is
                # looked up once per session instead.
                trust_env=False,
                read_bufsize=2**18,
            )
            self._proxy, self._proxy_auth = env_proxy(self._url)
        return self._http

    async def close(self) -> None:
        if self._http is not None and not self._http.closed:
            await self._http.close()
        await self._client.close()

    def _fields(self, messages: list[ChatMessage], params: GenerationParams) -> dict[str, Any]:
        """The chat completion request's fields, as they go on the wire."""
        fields: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            fields["stop"] = list(params.stop)
        return fields

    def _request(self, messages: list[ChatMessage], params: GenerationParams) -> dict[str, Any]:
        request = self._fields(messages, params)
        # The messages go in extra_body, not create(messages=...): create() walks
        # each one through the SDK's TypedDict transform, 1-2 ms per request for a
        # long history, which plain role/content dicts do not need.
        request["extra_body"] = {"messages": request["messages"]}
        request["messages"] = []
        return request

    async def stream(
        self, messages: list[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[str]:
        content = json.dumps({**self._fields(messages, params), "stream": True}).encode()
        response: aiohttp.ClientResponse | None = None
        finished = False
        try:
            response = await self._open_stream(content)
            done = False
            async for data in _sse_data(response.content.iter_any()):
                if done:
                    continue  # read to the end, so the connection is reused
                if data == "[DONE]":
                    done = True
                    continue
                piece = _delta_content(data)
                if piece:
                    yield piece
            finished = True
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise _translate(exc) from exc
        finally:
            # Read to its end, the connection goes back to the pool. Otherwise (cancel,
            # aclose, an error) it is closed: that aborts the HTTP request, so a
            # cancelled reply stops costing tokens too.
            if response is not None:
                if finished:
                    response.release()
                else:
                    response.close()

    async def _open_stream(self, content: bytes) -> aiohttp.ClientResponse:
        """POST the request; retry what the SDK retries before the reply starts."""
        http = self._session()
        attempt = 0
        while True:
            try:
                response = await http.post(
                    self._url, data=content, proxy=self._proxy, proxy_auth=self._proxy_auth
                )
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                # Retried: nothing of an answer came (refused, reset, a pooled connection
                # the server had closed, connect timeout). A read timeout waiting for the
                # answer is not: the model is there but slow.
                if attempt >= self.max_retries or isinstance(exc, aiohttp.SocketTimeoutError):
                    raise
                await asyncio.sleep(_backoff(attempt, None))
                attempt += 1
                continue
            status = response.status
            if status < 400:
                return response
            retry_after = response.headers.get("retry-after")
            response.close()
            if attempt < self.max_retries and (status in _RETRY_STATUS or status >= 500):
                await asyncio.sleep(_backoff(attempt, retry_after))
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


def env_proxy(url: str) -> tuple[Any, aiohttp.BasicAuth | None]:
    """The proxy the environment names for ``url`` and its credentials; ``(None, None)`` if none.

    What aiohttp's ``trust_env`` does per request (``HTTP(S)_PROXY``,
    ``NO_PROXY``, credentials in the proxy URL or ``~/.netrc``), done once.
    """
    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None


def _backoff(attempt: int, retry_after: str | None) -> float:
    """Seconds before retry number ``attempt + 1``: the server's word (up to 8 s), else
    0.5 s doubling up to 8 s, with up to 25 % jitter (the SDK's schedule)."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), 8.0)
        except ValueError:
            pass
    return min(0.5 * 2**attempt, 8.0) * (1 - 0.25 * random.random())


async def _sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The ``data`` of each Server-Sent Event in a byte stream, however it is split.

    Lines end with LF, CRLF or CR (the spec's three); multi-line data is joined
    by newlines. Comment lines and other fields (``event``, ``id``, ``retry``)
    are skipped: chat completion streams carry everything in ``data``. Lines
    are split on bytes (a newline never occurs inside a UTF-8 character), one
    pass per network read rather than an await per line.
    """
    parts: list[bytes] = []
    rest = b""
    async for chunk in chunks:
        data = rest + chunk if rest else chunk
        if b"\r" in data:
            # A CR at the very end may be the first half of a CRLF: wait for more.
            held = data.endswith(b"\r")
            data = (data[:-1] if held else data).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = data.split(b"\n")
            rest = lines.pop() + (b"\r" if held else b"")
        else:
            lines = data.split(b"\n")
            rest = lines.pop()
        for line in lines:
            if not line:
                if parts:
                    yield _joined(parts)
                    parts.clear()
            elif line.startswith(b"data:"):
                value = line[5:]
                parts.append(value[1:] if value.startswith(b" ") else value)
    rest = rest.rstrip(b"\r")
    if rest.startswith(b"data:"):
        value = rest[5:]
        parts.append(value[1:] if value.startswith(b" ") else value)
    if parts:
        yield _joined(parts)


def _joined(parts: list[bytes]) -> str:
    return (parts[0] if len(parts) == 1 else b"\n".join(parts)).decode("utf-8", "replace")


def _delta_content(data: str) -> str | None:
    """The text of one ``chat.completion.chunk``; an in-stream error raises."""
    try:
        chunk = orjson.loads(data)  # one per token: 4x the standard library's speed
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
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return LLMTimeout()
    if isinstance(exc, openai.APIStatusError):
        return LLMError(
            f"the language model endpoint answered HTTP {exc.status_code}", code="llm_error"
        )
    if isinstance(exc, openai.APIConnectionError | aiohttp.ClientError):
        return LLMError("could not reach the language model endpoint", code="llm_unavailable")
    return LLMError(f"the language model failed: {type(exc).__name__}", code="llm_error")
