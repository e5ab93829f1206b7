"""A fake ElevenLabs API on loopback, speaking its real streaming wire format.

``POST /v1/text-to-speech/{voice_id}/stream?output_format=pcm_<rate>`` with the
``xi-api-key`` header answers with raw PCM16 mono audio (a tone, 0.2 s per
word) in odd-sized pieces, so clients must handle samples split across
network chunks. Errors use ElevenLabs' shapes: 401 ``{"detail": {"status":
"invalid_api_key", ...}}``, 404 for the voice id ``missing``, 422 with a list
``detail`` for a body without ``text``. ``[slow]`` in the text sends a piece
every 50 ms (time to cancel); ``[500]`` fails. Requests are kept in
``requests``; ``aborted`` counts streams the client closed early.
"""

from __future__ import annotations

import asyncio
import math
import struct
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.openai_server import FakeOpenAI

API_KEY = "xi-test-key"


def tone(seconds: float, rate: int, freq: float = 220.0) -> bytes:
    """A quiet sine tone as PCM16 mono."""
    count = int(seconds * rate)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / rate))) for i in range(count)
    )


class FakeElevenLabs(FakeOpenAI):
    """Reuses the loopback server plumbing of :class:`FakeOpenAI` with ElevenLabs routes."""

    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/text-to-speech/{voice_id}/stream", self._stream, methods=["POST"]),
            ]
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _stream(self, request: Request) -> Response:
        voice_id = request.path_params["voice_id"]
        if request.headers.get("xi-api-key") != self.api_key:
            return JSONResponse(
                {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}, 401
            )
        body = await request.json()
        self.requests.append(
            {"voice_id": voice_id, "query": dict(request.query_params), "body": body}
        )
        if not isinstance(body.get("text"), str):
            return JSONResponse(
                {"detail": [{"loc": ["body", "text"], "msg": "field required", "type": "missing"}]},
                422,
            )
        if voice_id == "missing":
            return JSONResponse(
                {
                    "detail": {
                        "status": "voice_not_found",
                        "message": "A voice with that id was not found.",
                    }
                },
                404,
            )
        fmt = request.query_params.get("output_format", "mp3_44100_128")
        if not fmt.startswith("pcm_"):
            return JSONResponse({"detail": {"status": "invalid_format", "message": fmt}}, 400)
        text = body["text"]
        if "[500]" in text:
            return JSONResponse({"detail": {"status": "error", "message": "boom"}}, 500)
        rate = int(fmt[4:])
        audio = tone(0.2 * max(1, len(text.split())), rate)
        slow = "[slow]" in text

        async def pieces() -> Any:
            try:
                for start in range(0, len(audio), 1001):  # odd sizes: samples split across reads
                    yield audio[start : start + 1001]
                    await asyncio.sleep(0.05 if slow else 0)
                self.completed += 1
            except asyncio.CancelledError:
                self.aborted += 1
                raise

        return StreamingResponse(pieces(), media_type="audio/pcm")
