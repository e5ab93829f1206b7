"""The baseline: a bare ``websockets`` server (same library and version Salon runs on, uvloop).

Two behaviours on one endpoint, chosen by the first frame of a message:

- ``push:N:S``: send N text frames of S bytes, one ``await ws.send`` each (the
  shape of a streamed reply: one request in, many frames out);
- a JSON ``session.start`` / ``message.create`` (with ``--llm URL``): the
  *bare relay*, the least a chat server can do: answer ``session.ready``,
  then per message POST to the OpenAI-compatible endpoint with aiohttp, and
  send ``response.created``, one ``response.text.delta`` per streamed chunk
  and ``response.done``. No auth, storage, log, fan-out or prompt: the
  latency floor of (b) on this machine (the same hops: model -> server ->
  client);
- anything else is echoed back as is (the classic echo server).

No parsing, no storage, no fan-out: what is left is the cost of the
WebSocket library and the kernel, the floor any Python server on this stack
pays per frame. permessage-deflate is negotiated only when a client offers it
(websockets' defaults, the same window and memory settings uvicorn uses): the
throughput clients do not offer it, half of the idle clients do.

Run: ``python benchmarks/baseline.py --port P [--llm URL]``; it prints ``ready`` when listening.
"""

from __future__ import annotations

import argparse
import json
import resource
from typing import Any

import aiohttp
import uvloop
from websockets.asyncio.server import serve

LLM_URL: str | None = None
LLM: aiohttp.ClientSession | None = None


async def relay(ws: Any, text: str) -> None:
    """Stream one reply of the model at ``LLM`` to ``ws`` (see the module docstring)."""
    assert LLM is not None
    body = {"model": "bench", "messages": [{"role": "user", "content": text}], "stream": True}
    await ws.send('{"type":"response.created"}')
    assert LLM_URL is not None
    async with LLM.post(LLM_URL, json=body) as response:
        async for line in response.content:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                event = {"type": "response.text.delta", "delta": delta}
                await ws.send(json.dumps(event, separators=(",", ":")))
    await ws.send('{"type":"response.done"}')


async def handler(ws: Any) -> None:
    frames: dict[int, str] = {}
    async for message in ws:
        if LLM is not None and isinstance(message, str) and message.startswith("{"):
            event = json.loads(message)
            if event.get("type") == "session.start":
                await ws.send('{"type":"session.ready"}')
            elif event.get("type") == "message.create":
                await relay(ws, event["text"])
        elif isinstance(message, str) and message.startswith("push:"):
            _, count, size = message.split(":")
            frame = frames.get(int(size))
            if frame is None:
                frame = frames[int(size)] = "x" * int(size)
            for _ in range(int(count)):
                await ws.send(frame)
        else:
            await ws.send(message)


async def main_async(port: int) -> None:
    global LLM
    if LLM_URL:
        LLM = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_read=30),
            connector=aiohttp.TCPConnector(limit=0),
        )
    async with serve(
        handler,
        "127.0.0.1",
        port,
        max_size=65536,
        ping_interval=20,
        backlog=4096,
    ) as server:
        print("ready", flush=True)
        await server.serve_forever()


def main() -> None:
    global LLM_URL
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--llm", help="OpenAI-compatible base URL for the bare relay")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args = parser.parse_args()
    if args.llm:
        LLM_URL = args.llm.rstrip("/") + "/chat/completions"
    uvloop.run(main_async(args.port))


if __name__ == "__main__":
    main()
