"""The OpenAI-compatible provider against a loopback server speaking the real wire format.

The provider reads the Server-Sent Events itself (not through the SDK's
per-chunk pydantic models), so its parser is checked here on the cases real
servers produce: comments, other SSE fields, CRLF, multi-line data, chunks
without choices, in-stream errors, malformed chunks, stalls and cut streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agents.llm.base import ChatMessage, GenerationParams, LLMError, LLMTimeout
from agents.llm.openai_compat import OpenAICompatibleProvider
from tests.fakes.openai_server import FakeOpenAI


def _provider(fake: FakeOpenAI, timeout: float = 5.0) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        base_url=fake.base_url, api_key="sk-test", model="fake", timeout=timeout, max_retries=0
    )


async def _collect(provider: OpenAICompatibleProvider, text: str) -> list[str]:
    pieces = []
    async for piece in provider.stream([ChatMessage("user", text)], GenerationParams()):
        pieces.append(piece)
    return pieces


async def test_streams_pieces_in_order(fake_llm: FakeOpenAI) -> None:
    provider = _provider(fake_llm)
    try:
        assert await _collect(provider, "hi") == ["Hello", " from", " the", " fake", " model", "."]
    finally:
        await provider.close()


async def test_sse_edge_cases_parse_like_the_spec(fake_llm: FakeOpenAI) -> None:
    provider = _provider(fake_llm)
    try:
        # Comments, event/id fields, CRLF and a no-choices chunk add nothing; the
        # chunk split over two data lines still yields its piece.
        assert "".join(await _collect(provider, "[sse]")) == "Hello from the fake model."
    finally:
        await provider.close()


async def test_error_event_mid_stream_raises_llm_error(fake_llm: FakeOpenAI) -> None:
    provider = _provider(fake_llm)
    pieces: list[str] = []
    try:
        with pytest.raises(LLMError) as info:
            async for piece in provider.stream(
                [ChatMessage("user", "[errorevent]")], GenerationParams()
            ):
                pieces.append(piece)
    finally:
        await provider.close()
    assert pieces == ["Hello", " from", " the"]  # what came before the error is kept
    assert info.value.code == "llm_error"
    assert "overloaded" in str(info.value)


async def test_malformed_chunk_raises_llm_error(fake_llm: FakeOpenAI) -> None:
    provider = _provider(fake_llm)
    try:
        with pytest.raises(LLMError, match="malformed") as info:
            await _collect(provider, "[garbage]")
    finally:
        await provider.close()
    assert info.value.code == "llm_error"


async def test_http_500_is_llm_error(fake_llm: FakeOpenAI) -> None:
    provider = _provider(fake_llm)
    try:
        with pytest.raises(LLMError, match="HTTP 500"):
            await _collect(provider, "[500]")
    finally:
        await provider.close()


async def test_stall_mid_stream_is_llm_timeout(fake_llm: FakeOpenAI) -> None:
    provider = _provider(fake_llm, timeout=0.5)
    try:
        with pytest.raises(LLMTimeout):
            await _collect(provider, "[stall]")
    finally:
        await provider.close()


async def test_cut_connection_is_an_error_not_a_hang(fake_llm: FakeOpenAI) -> None:
    provider = _provider(fake_llm)
    try:
        with pytest.raises(LLMError):
            await asyncio.wait_for(_collect(provider, "[die]"), 10)
    finally:
        await provider.close()


async def test_closing_the_stream_aborts_the_request(fake_llm: FakeOpenAI) -> None:
    provider = _provider(fake_llm)
    aborted = fake_llm.aborted
    try:
        stream = provider.stream([ChatMessage("user", "[slow]")], GenerationParams())
        assert await anext(stream) == "w0 "
        await stream.aclose()  # what the turn engine does on cancel
        for _ in range(100):
            if fake_llm.aborted > aborted:
                break
            await asyncio.sleep(0.02)
    finally:
        await provider.close()
    assert fake_llm.aborted == aborted + 1


async def test_unreachable_endpoint_is_llm_unavailable() -> None:
    provider = OpenAICompatibleProvider(
        base_url="http://127.0.0.1:9/v1", api_key=None, model="m", max_retries=0
    )
    try:
        with pytest.raises(LLMError) as info:
            await _collect(provider, "hi")
    finally:
        await provider.close()
    assert info.value.code == "llm_unavailable"


async def test_a_refused_request_is_retried_as_the_sdk_would(fake_llm: FakeOpenAI) -> None:
    provider = OpenAICompatibleProvider(
        base_url=fake_llm.base_url, api_key="sk-retry", model="fake", max_retries=1
    )
    try:
        before = len(fake_llm.requests)
        assert "".join(await _collect(provider, "again [429once]")) == "Hello from the fake model."
        assert len(fake_llm.requests) - before == 2  # 429 (Retry-After: 0), then the reply
        assert fake_llm.authorizations[-2:] == ["Bearer sk-retry", "Bearer sk-retry"]
        before = len(fake_llm.requests)
        with pytest.raises(LLMError, match="HTTP 500"):
            await _collect(provider, "[500]")
        assert len(fake_llm.requests) - before == 2  # one retry, then the error
    finally:
        await provider.close()


async def test_without_retries_a_refusal_is_an_llm_error(fake_llm: FakeOpenAI) -> None:
    provider = _provider(fake_llm)  # max_retries=0
    try:
        before = len(fake_llm.requests)
        with pytest.raises(LLMError, match="HTTP 429") as err:
            await _collect(provider, "once more [429once]")
        assert err.value.code == "llm_error"
        assert len(fake_llm.requests) - before == 1
    finally:
        await provider.close()


def test_backoff_follows_retry_after_within_limits() -> None:
    from agents.llm.openai_compat import _backoff

    assert _backoff(0, "2") == 2.0
    assert _backoff(0, "600") == 8.0  # a server asking for minutes does not stall a reply
    assert 0.375 <= _backoff(0, None) <= 0.5
    assert 0.75 <= _backoff(1, "soon") <= 1.0  # unreadable: the schedule
    assert _backoff(9, None) <= 8.0


async def test_more_concurrent_replies_than_a_default_pool_holds(fake_llm: FakeOpenAI) -> None:
    """Each streaming reply holds a connection for its whole length: 150 at once all start."""
    provider = _provider(fake_llm, timeout=30.0)
    streams = [
        provider.stream([ChatMessage("user", f"[stall] {i}")], GenerationParams())
        for i in range(150)
    ]
    try:
        async with asyncio.timeout(20):
            firsts = await asyncio.gather(*(anext(s) for s in streams))
        assert firsts == ["Hello"] * 150
    finally:
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
        await provider.close()


# -- the SSE reader, on any split of the bytes -------------------------------------------

SSE = (
    ": a comment\r\n"
    "event: chunk\r\nid: 7\r\n"
    'data: {"a": "h\u00e9llo"}\r\n\r\n'
    "data: line one\ndata:line two\n\n"
    "retry: 10\rdata: cr only\r\r"
    "data: [DONE]"  # the last event without its blank line: still an event
).encode()
EVENTS = ['{"a": "h\u00e9llo"}', "line one\nline two", "cr only", "[DONE]"]


async def _events(chunks: list[bytes]) -> list[str]:
    from agents.llm.openai_compat import _sse_data

    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return [data async for data in _sse_data(source())]


async def test_sse_events_are_the_same_however_the_bytes_are_split() -> None:
    assert await _events([SSE]) == EVENTS
    for size in range(1, 12):  # CRLF, CR and UTF-8 characters cut at every place
        chunks = [SSE[i : i + size] for i in range(0, len(SSE), size)]
        assert await _events(chunks) == EVENTS, size
    for cut in range(len(SSE)):
        assert await _events([SSE[:cut], SSE[cut:]]) == EVENTS, cut


async def test_sse_crlf_split_between_reads_is_one_line_end() -> None:
    # "data: a" CR | LF "data: b": one event with two data lines, not two events.
    assert await _events([b"data: a\r", b"\ndata: b\r\n\r\n"]) == ["a\nb"]
    assert await _events([b"data: a\r", b"\r"]) == ["a"]
    assert await _events([b"", b"data: x", b"\n", b"\n", b""]) == ["x"]


async def test_the_proxy_the_environment_names_is_used(
    fake_llm: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is honoured (looked up once, not per request); NO_PROXY bypasses it."""
    # The fake server doubles as the proxy: it answers the absolute-form request.
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", fake_llm.base_url.rsplit("/v1", 1)[0])
    through_proxy = OpenAICompatibleProvider(
        base_url="http://llm.invalid/v1", api_key="sk-test", model="fake", max_retries=0
    )
    try:
        assert "".join(await _collect(through_proxy, "hi")) == "Hello from the fake model."
        assert "".join(await _collect(through_proxy, "again")) == "Hello from the fake model."
    finally:
        await through_proxy.close()

    # NO_PROXY names the endpoint: straight there, the (dead) proxy is not asked.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = _provider(fake_llm)
    try:
        assert "".join(await _collect(direct, "hi")) == "Hello from the fake model."
    finally:
        await direct.close()
