"""A fake OpenAI-compatible server on loopback, speaking the real wire format.

Behaviour is steered by markers in the last user message, so tests drive it
through the real path (client -> Salon -> openai SDK -> HTTP -> here):

- ``[slow]``   tokens every 50 ms (200 of them): time to cancel or drop mid-reply
- ``[story]``  40 short sentences, a token every 20 ms: a long reply to speak
- ``[stall]``  a few tokens, then silence (provider timeout mid-stream)
- ``[500]``    HTTP 500 before streaming
- ``[429once]`` HTTP 429 (``Retry-After: 0``) the first time this text is sent, then a reply
- ``[die]``    a few tokens, then the connection is cut
- ``[echo]``   echo the system prompt back (to check prompt assembly)
- ``[errorevent]`` a few tokens, then an in-stream ``{"error": ...}`` event
- ``[garbage]`` a few tokens, then a ``data:`` line that is not JSON
- ``[sse]``    SSE edge cases: comments, ``event:``/``id:`` fields, CRLF line
  ends, ``data:`` without a space, multi-line data, a chunk with no choices
- otherwise    "Hello from <n> words reply" as a few quick tokens

A non-streaming request with a ``response_format`` answers with the next
string of ``json_replies`` when there is one (structured output, e.g. fact
extraction). Every request body is kept in ``requests`` for assertions; ``aborted`` counts
streams that the client closed before the end.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer, free_port

__all__ = ["FakeOpenAI", "free_port"]


class FakeOpenAI(LoopbackServer):
    def __init__(self, token_delay: float = 0.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self._refused: set[str] = set()
        self.json_replies: list[str] = []
        self.aborted = 0
        self.completed = 0
        self.token_delay = token_delay
        super().__init__(
            Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.authorizations.append(request.headers.get("authorization"))
        last = body["messages"][-1]["content"] if body["messages"] else ""
        if "[500]" in last:
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, 500)
        if "[429once]" in last and last not in self._refused:
            self._refused.add(last)
            error = {"error": {"message": "slow down", "type": "rate_limit"}}
            return JSONResponse(error, 429, headers={"Retry-After": "0"})
        if "[echo]" in last:
            words = [body["messages"][0]["content"]]
        elif "[slow]" in last:
            words = [f"w{i} " for i in range(200)]
        elif "[story]" in last:  # many short sentences, slowly: a long spoken reply
            words = [
                w for i in range(40) for w in (f"Sentence {i}", " has", " five", " words.", " ")
            ]
        else:
            words = ["Hello", " from", " the", " fake", " model", "."]
        delay = 0.05 if "[slow]" in last else 0.02 if "[story]" in last else self.token_delay
        if not body.get("stream"):
            text = "".join(words)
            if body.get("response_format") and self.json_replies:
                text = self.json_replies.pop(0)
            return JSONResponse(_completion(body, text))

        async def events() -> Any:
            try:
                for i, word in enumerate(words):
                    if "[stall]" in last and i == 3:
                        await asyncio.sleep(3600)
                    if "[errorevent]" in last and i == 3:
                        yield 'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
                        return
                    if "[garbage]" in last and i == 3:
                        yield "data: {not json\n\n"
                        return
                    if "[sse]" in last and i == 1:
                        yield ": keep-alive comment\r\n\r\n"
                        yield 'event: message\r\nid: 7\r\ndata:{"choices": []}\r\n\r\n'
                        # One JSON object over two data lines, split between two
                        # members: the "\n" that joins them is JSON whitespace.
                        text = json.dumps(_chunk(body, {"content": word}))
                        cut = text.index(", ") + 1
                        yield "data: " + text[:cut] + "\ndata: " + text[cut:] + "\n\n"
                        continue
                    if "[die]" in last and i == 3:
                        await asyncio.sleep(0.2)  # let the first pieces reach the client
                        raise ConnectionResetError("cut")
                    yield "data: " + json.dumps(_chunk(body, {"content": word})) + "\n\n"
                    if delay:
                        await asyncio.sleep(delay)
                yield "data: " + json.dumps(_chunk(body, {}, "stop")) + "\n\n"
                yield "data: [DONE]\n\n"
                self.completed += 1
            except asyncio.CancelledError:
                self.aborted += 1
                raise

        return StreamingResponse(events(), media_type="text/event-stream")


def _chunk(
    body: dict[str, Any], delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }


# -- moderations ---------------------------------------------------------------


class FakeModeration(FakeOpenAI):
    """The fake server, also answering ``POST /v1/moderations`` (OpenAI's wire format).

    Markers in the input steer it: ``[toxic]`` is flagged (harassment, score
    0.97), ``[borderline]`` is not flagged but scores 0.6 for harassment,
    ``[modslow]`` answers after ``slow_seconds`` (a timeout), ``[mod500]``
    fails with HTTP 500. Everything else is clean. Inputs are kept in
    ``moderation_inputs``.
    """

    def __init__(self, token_delay: float = 0.0, slow_seconds: float = 10.0) -> None:
        super().__init__(token_delay)
        self.moderation_inputs: list[Any] = []
        self.slow_seconds = slow_seconds
        self.app.router.routes.append(Route("/v1/moderations", self._moderations, methods=["POST"]))

    async def _moderations(self, request: Request) -> Response:
        body = await request.json()
        inputs = body.get("input")
        texts = inputs if isinstance(inputs, list) else [inputs]
        self.moderation_inputs.extend(texts)
        joined = " ".join(str(t) for t in texts)
        if "[mod500]" in joined:
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, 500)
        if "[modslow]" in joined:
            await asyncio.sleep(self.slow_seconds)
        return JSONResponse(
            {
                "id": "modr-fake",
                "model": body.get("model") or "omni-moderation-latest",
                "results": [_moderation(str(t)) for t in texts],
            }
        )


_MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


def _moderation(text: str) -> dict[str, Any]:
    toxic = "[toxic]" in text
    scores = {name: 0.001 for name in _MODERATION_CATEGORIES}
    if toxic:
        scores["harassment"] = 0.97
    elif "[borderline]" in text:
        scores["harassment"] = 0.6
    return {
        "flagged": toxic,
        "categories": {name: toxic and name == "harassment" for name in _MODERATION_CATEGORIES},
        "category_scores": scores,
        "category_applied_input_types": {name: ["text"] for name in _MODERATION_CATEGORIES},
    }


# -- audio (speech and transcriptions) -------------------------------------------


class FakeOpenAIAudio(FakeOpenAI):
    """The fake server, also answering OpenAI's audio endpoints (their wire format).

    ``POST /v1/audio/speech`` (JSON: model, input, voice, response_format,
    speed) streams a tone, 0.2 s per word: raw PCM16 24 kHz for ``pcm``, a
    WAV file for ``wav``; ``[500]`` in the input fails. ``POST
    /v1/audio/transcriptions`` (multipart: file, model, language, prompt)
    answers ``{"text": transcript}``; ``transcript`` is settable. Requests
    are kept in ``speech_requests`` and ``transcription_requests`` (with the
    uploaded file's name and size). Needs python-multipart for the form.
    """

    def __init__(self, token_delay: float = 0.0) -> None:
        super().__init__(token_delay)
        self.speech_requests: list[dict[str, Any]] = []
        self.transcription_requests: list[dict[str, Any]] = []
        self.transcript = "hello from the fake transcriber"
        self.app.router.routes.append(Route("/v1/audio/speech", self._speech, methods=["POST"]))
        self.app.router.routes.append(
            Route("/v1/audio/transcriptions", self._transcriptions, methods=["POST"])
        )

    async def _speech(self, request: Request) -> Response:
        import io
        import math
        import struct
        import wave

        body = await request.json()
        self.speech_requests.append(body)
        text = body.get("input", "")
        if "[500]" in text:
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, 500)
        rate = 24000
        count = int(0.2 * max(1, len(text.split())) * rate)
        pcm = b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * 220 * i / rate)))
            for i in range(count)
        )
        if body.get("response_format") == "wav":
            out = io.BytesIO()
            with wave.open(out, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(rate)
                w.writeframes(pcm)
            return Response(out.getvalue(), media_type="audio/wav")

        async def pieces() -> Any:
            for start in range(0, len(pcm), 4801):
                yield pcm[start : start + 4801]

        return StreamingResponse(pieces(), media_type="audio/pcm")

    async def _transcriptions(self, request: Request) -> Response:
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return JSONResponse(
                {"error": {"message": "file is required", "type": "invalid_request_error"}}, 400
            )
        data = await upload.read()
        self.transcription_requests.append(
            {
                "filename": upload.filename,
                "size": len(data),
                "head": data[:4],
                **{k: v for k, v in form.items() if isinstance(v, str)},
            }
        )
        if form.get("response_format") == "text":
            return Response(self.transcript, media_type="text/plain")
        return JSONResponse({"text": self.transcript})
