"""OpenAI-compatible ``POST /v1/chat/completions`` and ``GET /v1/models``.

``model`` names a persona (id or slug); ``user`` names the person, whose
conversation with that persona (channel ``api``) stores every turn. Salon owns
the history: of ``messages`` only the last user message is new input; client
``system`` messages are added to the persona's instructions for this reply.
The reply is produced by the same conversation service as WebSocket replies
and streamed from the event log, so operators see API chats live too.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agents.conversations import ConversationError
from agents.llm.base import GenerationParams
from agents.replies import reply_events
from memory.eventlog import ResumeGap
from server.http_util import HTTPError, json_body, require_principal, state_of


def _openai_error(
    status: int, message: str, code: str, type_: str = "invalid_request_error"
) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="salon"'} if status == 401 else None
    body = {"error": {"message": message, "type": type_, "code": code, "param": None}}
    return JSONResponse(body, status, headers=headers)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    raise HTTPError(400, "invalid_request", "message content must be a string or a list of parts")


def _parse(body: dict[str, Any]) -> tuple[str, str, str | None, GenerationParams | None, bool, str]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise HTTPError(400, "invalid_request", "'model' (a persona id or slug) is required")
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        raise HTTPError(400, "invalid_request", "'messages' must be a non-empty list of objects")
    last = messages[-1]
    if last.get("role") != "user":
        raise HTTPError(400, "invalid_request", "the last message must have role 'user'")
    text = _text_of(last.get("content"))
    system = (
        "\n\n".join(
            _text_of(m.get("content"))
            for m in messages[:-1]
            if m.get("role") in ("system", "developer")
        )
        or None
    )
    user = body.get("user") or "anonymous"
    if not isinstance(user, str) or len(user) > 200:
        raise HTTPError(400, "invalid_request", "'user' must be a string of at most 200 characters")
    params = None
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    temperature = body.get("temperature")
    if max_tokens is not None or temperature is not None:
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or not 1 <= max_tokens <= 8192
        ):
            raise HTTPError(400, "invalid_request", "'max_tokens' must be an integer in 1..8192")
        if temperature is not None and (
            not isinstance(temperature, int | float) or not 0 <= temperature <= 2
        ):
            raise HTTPError(400, "invalid_request", "'temperature' must be a number in 0..2")
        params = GenerationParams(
            max_tokens=max_tokens or 256,
            temperature=0.7 if temperature is None else float(temperature),
        )
    return model, text, system, params, bool(body.get("stream")), user


async def chat_completions(request: Request) -> Response:
    try:
        principal = await require_principal(request)
        body = await json_body(request)
        model, text, system, params, stream, user = _parse(body)
    except HTTPError as exc:
        kind = "authentication_error" if exc.status == 401 else "invalid_request_error"
        return _openai_error(exc.status, exc.message, exc.code, kind)
    state = state_of(request)
    limit = state.settings.max_message_chars
    if system is not None and len(system) > limit:
        return _openai_error(
            400, f"system instructions are longer than {limit} characters", "message_too_long"
        )
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
        return _openai_error(400, "Idempotency-Key must be 1..200 characters", "invalid_request")
    if principal.is_session:
        user = principal.user_id or user  # a session token speaks for its own user only
        if principal.persona is not None:
            record = await state.store.get_persona(principal.tenant_id, model)
            if record is None or record.id != principal.persona:
                return _openai_error(
                    403,
                    "this session token is for another persona",
                    "forbidden",
                    "permission_error",
                )
    service = state.service
    try:
        session = await service.open(
            principal.tenant_id,
            persona=model,
            user_external_id=user,
            channel="api",
            reuse_latest=True,
        )
        conv_id = session.conversation.id
        rate_key = f"user-rate:{principal.tenant_id}:{session.user.id}"
        if not await state.hot.hit(rate_key, state.settings.user_messages_per_minute, 60):
            return _openai_error(
                429,
                "too many messages from this user; try again later",
                "rate_limited",
                "rate_limit_error",
            )
        start_seq = await state.events.latest_seq(conv_id)
        message, created = await service.submit(
            session,
            client_id=idempotency_key,
            text=text,
            params=params,
            instructions=system,
        )
    except ConversationError as exc:
        status = {"unknown_persona": 404, "shutdown": 503, "moderation_unavailable": 503}.get(
            exc.code, 400
        )
        return _openai_error(status, str(exc), exc.code)

    completion_id = "chatcmpl-" + message.id
    created_ts = int(time.time())
    persona_slug = session.persona.slug
    prompt_tokens = state.provider.count_tokens(text)
    if not created:
        # A repeated Idempotency-Key: answer with the original reply, found from
        # the start of the retained log (it may still be streaming).
        start_seq = 0
        try:
            await state.events.replay(conv_id, 0)
        except ResumeGap:
            return _openai_error(
                409,
                "this Idempotency-Key was already used and its reply is no longer retained; "
                f"see GET /v1/conversations/{conv_id}/messages",
                "duplicate_request",
            )
    reply = reply_events(state.events, conv_id, start_seq, message.id)

    if not stream:
        parts: list[str] = []
        async for event in reply:
            if event["type"] == "response.text.delta":
                parts.append(event["delta"])
            elif event["type"] == "error":
                return _openai_error(502, event["message"], event["code"], "api_error")
            elif event["type"] in ("response.done", "response.cancelled"):
                content = event.get("text", "".join(parts))
                finish = "stop" if event["type"] == "response.done" else "cancelled"
                return JSONResponse(
                    {
                        "id": completion_id,
                        "object": "chat.completion",
                        "created": created_ts,
                        "model": persona_slug,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": finish,
                            }
                        ],
                        "usage": _usage(state, prompt_tokens, content),
                        "salon": {
                            "conversation_id": conv_id,
                            "message_id": event.get("message_id"),
                        },
                    }
                )
        return _openai_error(502, "the reply ended unexpectedly", "llm_error", "api_error")

    async def sse() -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created_ts,
                "model": persona_slug,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(payload)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        async for event in reply:
            if event["type"] == "response.text.delta":
                yield chunk({"content": event["delta"]})
            elif event["type"] == "error":
                err = {
                    "error": {
                        "message": event["message"],
                        "type": "api_error",
                        "code": event["code"],
                    }
                }
                yield f"data: {json.dumps(err)}\n\n"
                break
            elif event["type"] in ("response.done", "response.cancelled"):
                yield chunk({}, "stop" if event["type"] == "response.done" else "cancelled")
                break
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        sse(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _usage(state: Any, prompt_tokens: int, content: str) -> dict[str, int]:
    completion = state.provider.count_tokens(content) if content else 0
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


async def list_models(request: Request) -> Response:
    try:
        principal = await require_principal(request)
    except HTTPError as exc:
        return _openai_error(exc.status, exc.message, exc.code, "authentication_error")
    personas = await state_of(request).store.list_personas(principal.tenant_id)
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {
                    "id": p.slug,
                    "object": "model",
                    "created": int(p.created_at.timestamp()),
                    "owned_by": "salon",
                }
                for p in personas
            ],
        }
    )


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
]
