"""A fake OpenAI images endpoint (``POST /v1/images/generations``), on loopback.

Speaks the real wire format: ``{"created": ..., "data": [{"b64_json": ...}]}``
(or ``url`` when asked with ``response_format=url``), OpenAI's error bodies
(``{"error": {"message", "type", "param", "code"}}``), and the rules the
real API enforces that a client must respect: GPT image models take only
their three sizes and reject ``response_format``; ``n`` is 1..10.

Markers in the prompt: ``[500]`` answers HTTP 500, ``[400]`` a plain bad
request, ``[refuse]`` the 400 ``content_policy_violation`` of OpenAI's
safety system, ``[slow]`` waits 2 s, ``[jpeg]`` answers a JPEG, ``[url]``
answers with a link (served here) instead of base64, ``[empty]`` answers no
image. With ``api_key`` set,
any other bearer token gets the real 401.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import threading
import time
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer

GPT_IMAGE_SIZES = {"1024x1024", "1536x1024", "1024x1536", "auto"}


def fake_image(prompt: str, width: int, height: int, fmt: str = "PNG") -> bytes:
    """The fake model's picture: a flat colour seeded by the prompt."""
    colour = tuple(hashlib.sha256(prompt.encode()).digest()[:3])
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def _error(status: int, message: str, type_: str, code: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status)


class FakeOpenAIImages(LoopbackServer):
    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self._stopping = threading.Event()
        super().__init__(
            Starlette(
                routes=[
                    Route("/v1/images/generations", self._generations, methods=["POST"]),
                    Route("/files/{name}", self._file, methods=["GET"]),
                ]
            )
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self._stopping.set()
        super().stop()

    async def _file(self, request: Request) -> Response:
        data = self.files.get(request.path_params["name"])
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/png")

    async def _generations(self, request: Request) -> Response:
        if self.api_key is not None:
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return _error(
                    401,
                    "Incorrect API key provided.",
                    "invalid_request_error",
                    "invalid_api_key",
                )
        body = await request.json()
        self.requests.append(body)
        prompt = str(body.get("prompt", ""))
        model = str(body.get("model", "dall-e-2"))
        size = str(body.get("size", "1024x1024"))
        if not prompt:
            return _error(400, "prompt is required", "invalid_request_error")
        if not 1 <= int(body.get("n", 1)) <= 10:
            return _error(400, "n must be between 1 and 10", "invalid_request_error")
        if model.startswith("gpt-image"):
            if "response_format" in body:
                return _error(400, "Unknown parameter: 'response_format'.", "invalid_request_error")
            if size not in GPT_IMAGE_SIZES:
                return _error(400, f"Invalid value: '{size}'.", "invalid_request_error")
        if "[500]" in prompt:
            return _error(500, "The server had an error.", "server_error")
        if "[400]" in prompt:
            return _error(400, "Invalid value for 'quality'.", "invalid_request_error")
        if "[refuse]" in prompt:
            return _error(
                400,
                "Your request was rejected as a result of our safety system.",
                "invalid_request_error",
                "content_policy_violation",
            )
        if "[slow]" in prompt:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and not self._stopping.is_set():
                await asyncio.sleep(0.05)
        width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
        fmt = "JPEG" if "[jpeg]" in prompt or body.get("output_format") == "jpeg" else "PNG"
        data = fake_image(prompt, width, height, fmt)
        items: list[dict[str, Any]] = []
        if "[empty]" not in prompt:
            if "[url]" in prompt or body.get("response_format") == "url":
                name = f"{len(self.files)}.png"
                self.files[name] = data
                items.append({"url": f"http://127.0.0.1:{self.port}/files/{name}"})
            else:
                item: dict[str, Any] = {"b64_json": base64.b64encode(data).decode()}
                if model == "dall-e-3":
                    item["revised_prompt"] = f"A picture of {prompt}"
                items.append(item)
        return JSONResponse({"created": int(time.time()), "data": items})
