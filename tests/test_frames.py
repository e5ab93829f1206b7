"""server/frames.py on a real uvicorn (websockets-sansio, as ``salon serve`` runs it)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
import websockets

from server.frames import MAX_FRAMES_PER_WRITE, FrameWriter, SocketGone

App = Callable[[FrameWriter, Any], Awaitable[None]]


class _CountingTransport:
    """The protocol's transport, counting writes (everything else passes through)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serving(body: App) -> AsyncIterator[str]:
    """uvicorn on loopback whose one websocket route hands a FrameWriter to ``body``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await body(FrameWriter(send), send.__self__)

    port = _free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws="websockets-sansio",
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield f"ws://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        await task


async def test_a_batch_is_separate_frames_in_order_in_one_write() -> None:
    writes: list[int] = []
    texts = [f'{{"type":"response.text.delta","delta":"t{i}"}}' for i in range(50)]

    async def body(writer: FrameWriter, protocol: Any) -> None:
        counter = _CountingTransport(protocol.transport)
        protocol.transport = counter
        await writer.write(texts)
        writes.append(counter.writes)
        await writer.write(["one"])
        writes.append(counter.writes)
        await asyncio.sleep(0.2)

    async with serving(body) as url, websockets.connect(url) as ws:
        got = [await ws.recv() for _ in range(51)]
    assert got == [*texts, "one"]
    assert writes == [1, 2]  # fifty frames, one write; then one more


async def test_a_long_backlog_goes_in_writes_of_a_bounded_size() -> None:
    writes: list[int] = []
    count = 2 * MAX_FRAMES_PER_WRITE + 5
    texts = [str(i) for i in range(count)]

    async def body(writer: FrameWriter, protocol: Any) -> None:
        counter = _CountingTransport(protocol.transport)
        protocol.transport = counter
        await writer.write(texts)
        writes.append(counter.writes)
        await asyncio.sleep(0.2)

    async with serving(body) as url, websockets.connect(url) as ws:
        got = [await ws.recv() for _ in range(count)]
    assert got == texts
    assert writes == [3]


async def test_writing_after_the_client_left_raises_socket_gone() -> None:
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def body(writer: FrameWriter, protocol: Any) -> None:
        while not protocol.disconnected:
            await asyncio.sleep(0.01)
        try:
            await writer.write(["a", "b"])
        except BaseException as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)

    async with serving(body) as url:
        async with websockets.connect(url):
            pass
        async with asyncio.timeout(10):
            error = await outcome
    assert isinstance(error, SocketGone)


async def test_a_paused_transport_holds_the_batch_until_it_drains() -> None:
    states: list[bool] = []

    async def body(writer: FrameWriter, protocol: Any) -> None:
        protocol.writable.clear()  # what pause_writing does while the client lags
        pending = asyncio.create_task(writer.write(["x", "y"]))
        await asyncio.sleep(0.05)
        states.append(pending.done())
        protocol.writable.set()  # resume_writing
        await pending
        states.append(pending.done())
        await asyncio.sleep(0.2)

    async with serving(body) as url, websockets.connect(url) as ws:
        assert [await ws.recv(), await ws.recv()] == ["x", "y"]
    assert states == [False, True]


async def test_other_servers_get_one_asgi_send_per_frame() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await FrameWriter(send).write(["a", "b", "c"])
    assert sent == [{"type": "websocket.send", "text": t} for t in "abc"]


@pytest.mark.parametrize("count", [0, 1])
async def test_empty_and_single_batches(count: int) -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await FrameWriter(send).write(["z"] * count)
    assert len(sent) == count
