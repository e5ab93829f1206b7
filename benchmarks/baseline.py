"""The baseline: a bare ``websockets`` server (same library and version Salon runs on, uvloop).

Two behaviours on one endpoint, chosen by the first frame of a message:

- ``push:N:S``: send N text frames of S bytes, one ``await ws.send`` each (the
  shape of a streamed reply: one request in, many frames out);
- anything else is echoed back as is (the classic echo server).

No parsing, no storage, no fan-out: what is left is the cost of the
WebSocket library and the kernel, the floor any Python server on this stack
pays per frame. permessage-deflate is negotiated only when a client offers it
(websockets' defaults, the same window and memory settings uvicorn uses): the
throughput clients do not offer it, half of the idle clients do.

Run: ``python benchmarks/baseline.py --port P``; it prints ``ready`` when listening.
"""

from __future__ import annotations

import argparse
import resource
from typing import Any

import uvloop
from websockets.asyncio.server import serve


async def handler(ws: Any) -> None:
    frames: dict[int, str] = {}
    async for message in ws:
        if isinstance(message, str) and message.startswith("push:"):
            _, count, size = message.split(":")
            frame = frames.get(int(size))
            if frame is None:
                frame = frames[int(size)] = "x" * int(size)
            for _ in range(int(count)):
                await ws.send(frame)
        else:
            await ws.send(message)


async def main_async(port: int) -> None:
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(main_async(parser.parse_args().port))


if __name__ == "__main__":
    main()
