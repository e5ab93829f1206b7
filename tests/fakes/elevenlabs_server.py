"""A fake ElevenLabs API on loopback, speaking its real streaming wire format.

``POST /v1/text-to-speech/{voice_id}/stream?output_format=pcm_<rate>`` with the
``xi-api-key`` header answers with raw PCM16 mono audio (a tone, 0.2 s per
word) in odd-sized pieces, so clients must handle samples split across
network chunks. Errors use ElevenLabs' shapes: 401 ``{"detail": {"status":
"invalid_api_key", ...}}``, 404 for the voice id ``missing``, 422 with a list
``detail`` for a body without ``text``. ``[slow]`` in the text sends a piece
every 50 ms (time to cancel); ``[500]`` fails. Requests are kept in
``requests``; ``aborted`` counts streams the client closed early.

Voice cloning: ``POST /v1/voices/add`` parses the real multipart form
(``name``, repeated ``files``, ``description``, ``labels`` as a JSON string,
``remove_background_noise``), keeps what it got in ``clone_requests`` (file
names, types, sizes and first bytes, not the audio) and the voice in
``voices``, and answers ``{"voice_id", "requires_verification"}``. Markers in
the name fail it: ``[422]`` (a validation error), ``[429]``
(``too_many_concurrent_requests``), ``[500]``, ``[slow]`` (answers after 2 s,
for client timeouts); ``[verify]`` answers ``requires_verification: true``.
``DELETE /v1/voices/{voice_id}`` removes a known voice (``deleted`` lists
them), 404 ``voice_not_found`` otherwise; set ``delete_failure`` to an HTTP
status to make every deletion fail with it.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import string
import struct
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
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
        self.clone_requests: list[dict[str, Any]] = []
        self.voices: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.delete_failure: int | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/text-to-speech/{voice_id}/stream", self._stream, methods=["POST"]),
                Route("/v1/voices/add", self._add_voice, methods=["POST"]),
                Route("/v1/voices/{voice_id}", self._delete_voice, methods=["DELETE"]),
            ]
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _unauthorized(self, request: Request) -> Response | None:
        if request.headers.get("xi-api-key") != self.api_key:
            return JSONResponse(
                {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}, 401
            )
        return None

    async def _add_voice(self, request: Request) -> Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return JSONResponse(
                {"detail": [{"loc": ["body"], "msg": "multipart expected", "type": "value_error"}]},
                422,
            )
        async with request.form(max_files=100) as form:
            files = []
            for part in form.getlist("files"):
                if not isinstance(part, UploadFile):
                    continue
                data = await part.read()
                files.append(
                    {
                        "filename": part.filename,
                        "content_type": part.content_type,
                        "size": len(data),
                        "head": data[:4],
                    }
                )
            name = form.get("name")
            labels_raw = form.get("labels")
            record: dict[str, Any] = {
                "name": name,
                "description": form.get("description"),
                "labels": json.loads(labels_raw) if isinstance(labels_raw, str) else None,
                "remove_background_noise": form.get("remove_background_noise"),
                "files": files,
            }
        self.clone_requests.append(record)
        missing = [
            f for f, ok in (("name", isinstance(name, str) and name), ("files", files)) if not ok
        ]
        if missing:
            detail = [
                {"loc": ["body", f], "msg": "field required", "type": "missing"} for f in missing
            ]
            return JSONResponse({"detail": detail}, 422)
        assert isinstance(name, str)
        if "[422]" in name:
            return JSONResponse(
                {"detail": [{"loc": ["body", "files"], "msg": "audio too noisy", "type": "value"}]},
                422,
            )
        if "[429]" in name:
            return JSONResponse(
                {
                    "detail": {
                        "status": "too_many_concurrent_requests",
                        "message": "Too many concurrent requests",
                    }
                },
                429,
            )
        if "[500]" in name:
            return JSONResponse({"detail": {"status": "error", "message": "boom"}}, 500)
        if "[slow]" in name:
            await asyncio.sleep(2)
        alphabet = string.ascii_letters + string.digits
        voice_id = "".join(secrets.choice(alphabet) for _ in range(20))
        self.voices[voice_id] = record
        return JSONResponse({"voice_id": voice_id, "requires_verification": "[verify]" in name})

    async def _delete_voice(self, request: Request) -> Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        voice_id = request.path_params["voice_id"]
        if self.delete_failure is not None:
            return JSONResponse(
                {"detail": {"status": "error", "message": "delete failed"}}, self.delete_failure
            )
        if self.voices.pop(voice_id, None) is None:
            return JSONResponse(
                {
                    "detail": {
                        "status": "voice_not_found",
                        "message": "A voice with that id was not found.",
                    }
                },
                404,
            )
        self.deleted.append(voice_id)
        return JSONResponse({"status": "ok"})

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
