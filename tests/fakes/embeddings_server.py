"""A fake OpenAI-compatible embeddings endpoint (``POST /v1/embeddings``), on loopback.

Speaks the real wire format (float or base64 vectors, ``index`` per item).
``[500]`` in any input answers HTTP 500, ``[slow]`` waits 2 s, an empty string
answers 400 (as OpenAI does). Vectors have ``dimensions`` entries when the
request asks, else ``default_dims``; they are deterministic per text and
deliberately not unit length (clients must normalize).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import struct
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer


def fake_vector(text: str, dims: int) -> list[float]:
    """The fake model's vector for ``text``: seeded by the text, components in -5..5."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    return [rng.uniform(-5.0, 5.0) for _ in range(dims)]


class FakeEmbeddings(LoopbackServer):
    def __init__(self, default_dims: int = 8) -> None:
        self.default_dims = default_dims
        self.requests: list[dict[str, Any]] = []
        self._stopping = threading.Event()
        super().__init__(
            Starlette(routes=[Route("/v1/embeddings", self._embeddings, methods=["POST"])])
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self._stopping.set()
        super().stop()

    async def _embeddings(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if any("[500]" in t for t in inputs):
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, 500)
        if any("[slow]" in t for t in inputs):
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and not self._stopping.is_set():
                await asyncio.sleep(0.05)
        if any(t == "" for t in inputs):
            return JSONResponse({"error": {"message": "empty input", "type": "invalid"}}, 400)
        dims = body.get("dimensions") or self.default_dims
        data = []
        # Answer in reverse order: clients must order by "index", not by position.
        for index in reversed(range(len(inputs))):
            vector = fake_vector(inputs[index], dims)
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
            }
        )
