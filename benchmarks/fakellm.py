"""An instant OpenAI-compatible streaming endpoint for benchmarks (raw asyncio + uvloop).

``POST /v1/chat/completions`` answers with Server-Sent Events in the real
``chat.completion.chunk`` format, with no model time at all. The reply is
steered by a marker in the request body (the newest one wins, so a
conversation's history does not matter): ``[bench n=N gap=G]`` streams N
tokens; with ``gap=0`` the whole response is written in one ``write`` from
bytes encoded once per N; with ``gap=G`` (milliseconds) the first token goes
out at once and then one token every G ms, each token carrying the
``time.monotonic()`` at which it was written (17 characters), so a client on
the same machine can measure token write -> delta received.

Run: ``python benchmarks/fakellm.py --port P``; it prints ``ready`` when listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

import uvloop

MARKER = re.compile(rb"\[bench n=(\d+) gap=(\d+)\]")
TOKEN = "tok "  # instant replies: 4 characters a token, like an average BPE token
STAMP_WIDTH = 17  # f"{monotonic:017.6f}"


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "bench",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


_STAMP = "@" * STAMP_WIDTH
# A stamp token ends with a space, like text tokens do: a run of digits glued
# to the next stamp would read as one long number, which PII masking (on by
# default) holds back until it ends.
_STAMP_CHUNK = _chunk(_STAMP + " ")
STAMP_PREFIX, STAMP_SUFFIX = _STAMP_CHUNK.split(_STAMP.encode())
TAIL = _chunk(None, "stop") + b"data: [DONE]\n\n"
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\ncontent-length: %d\r\n\r\n"
)
_instant: dict[int, bytes] = {}


def instant_response(n: int) -> bytes:
    cached = _instant.get(n)
    if cached is None:
        body = _chunk(TOKEN) * n + TAIL
        cached = _instant[n] = HEAD % len(body) + body
    return cached


class FakeLLM(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection from the server's OpenAI client."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.pacer: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pacer is not None:
            self.pacer.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            match = re.search(rb"content-length:\s*(\d+)", head)
            length = int(match.group(1)) if match else 0
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.answer(body)

    def answer(self, body: bytes) -> None:
        assert self.transport is not None
        found = MARKER.findall(body)
        n, gap = (int(found[-1][0]), int(found[-1][1])) if found else (6, 0)
        if gap == 0:
            self.transport.write(instant_response(n))
            return
        size = n * (len(STAMP_PREFIX) + STAMP_WIDTH + len(STAMP_SUFFIX)) + len(TAIL)
        self.transport.write(HEAD % size)
        self.pacer = asyncio.get_running_loop().create_task(self.paced(n, gap / 1000))

    async def paced(self, n: int, gap: float) -> None:
        transport = self.transport
        assert transport is not None
        start = time.monotonic()
        for i in range(n):
            delay = start + i * gap - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if transport.is_closing():
                return
            stamp = f"{time.monotonic():017.6f}".encode()
            transport.write(STAMP_PREFIX + stamp + STAMP_SUFFIX)
        transport.write(TAIL)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FakeLLM, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
