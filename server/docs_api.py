"""``GET /openapi.json`` and ``GET /docs`` (a self-contained page: no CDN needed offline)."""

from __future__ import annotations

import html
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

_ERR = {"$ref": "#/components/schemas/Error"}
_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]


def _op(
    summary: str, *, auth: bool = True, body: str | None = None, ok: str = "200", **extra: Any
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            ok: {"description": "OK"},
            "4XX": {"description": "Error", "content": {"application/json": {"schema": _ERR}}},
        },
    }
    if auth:
        op["security"] = _AUTH
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}, "example": body}},
        }
    op.update(extra)
    return op


def _id_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Salon",
        "version": "0.1.0",
        "description": "Persona chat server. The WebSocket protocol at /v1/ws is described in docs/protocol.md.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }
                },
            }
        },
    },
    "paths": {
        "/healthz": {"get": _op("Process is up", auth=False)},
        "/readyz": {"get": _op("Stores are reachable (503 otherwise)", auth=False)},
        "/metrics": {"get": _op("Prometheus metrics", auth=False)},
        "/v1/sessions": {
            "post": _op(
                "Mint a short-lived session token for one user",
                body='{"user": {"id": "u1"}, "persona": "ada"}',
                ok="201",
            )
        },
        "/v1/personas": {
            "get": _op("List personas"),
            "post": _op(
                "Create a persona from Salon JSON or a Character Card V2/V3",
                body='{"name": "Ada", "description": "..."}',
                ok="201",
            ),
        },
        "/v1/personas/{persona_id}": {
            "parameters": [_id_param("persona_id")],
            "get": _op("Get a persona (id or slug)"),
            "patch": _op("Update persona fields", body='{"scenario": "..."}'),
            "delete": _op("Delete a persona and its conversations", ok="204"),
        },
        "/v1/personas/{persona_id}/card": {
            "parameters": [
                _id_param("persona_id"),
                {"name": "format", "in": "query", "schema": {"enum": ["v2", "v3", "png"]}},
            ],
            "get": _op("Export as a Character Card"),
        },
        "/v1/conversations/{conversation_id}/messages": {
            "parameters": [
                _id_param("conversation_id"),
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                },
                {"name": "before", "in": "query", "schema": {"type": "string"}},
            ],
            "get": _op("Conversation history, oldest first"),
        },
        "/v1/conversations/{conversation_id}/presence": {
            "parameters": [_id_param("conversation_id")],
            "get": _op("Sockets on this conversation now, on any replica (API key)"),
        },
        "/v1/conversations/{conversation_id}/export": {
            "parameters": [_id_param("conversation_id")],
            "post": _op("Export a conversation as JSON in a background job", ok="202"),
        },
        "/v1/jobs/{job_id}": {
            "parameters": [_id_param("job_id")],
            "get": _op("Job status and progress"),
        },
        "/v1/jobs/{job_id}/result": {
            "parameters": [_id_param("job_id")],
            "get": _op("A finished job's file"),
        },
        "/v1/users/{user_id}/export": {
            "parameters": [_id_param("user_id")],
            "get": _op("Everything stored about a person, as JSON"),
        },
        "/v1/users/{user_id}/data": {
            "parameters": [_id_param("user_id")],
            "delete": _op("Forget a person entirely (API key)"),
        },
        "/v1/memories": {
            "get": _op("Memories (filters: persona, user, kind, pinned, include_superseded)"),
            "post": _op(
                "Add a memory for a persona and a person (API key)",
                body='{"persona": "ada", "user": "u1", "text": "..."}',
                ok="201",
            ),
        },
        "/v1/memories/{memory_id}": {
            "parameters": [_id_param("memory_id")],
            "get": _op("One memory"),
            "patch": _op("Edit text or importance; pin/unpin (API key)", body='{"pinned": true}'),
            "delete": _op("Forget one memory (API key)", ok="204"),
        },
        "/v1/chat/completions": {
            "post": _op(
                "OpenAI Chat Completions; model = persona, stream = SSE",
                body='{"model": "ada", "messages": [{"role": "user", "content": "hi"}], "stream": true, "user": "u1"}',
            )
        },
        "/v1/models": {"get": _op("Personas as OpenAI models")},
        "/v1/analytics/sentiment": {
            "get": _op(
                "Average sentiment per hour/day bucket (API key; persona, user, channel, role, bucket, from, to)"
            )
        },
        "/v1/analytics/emotions": {
            "get": _op("Average Plutchik emotions per hour/day bucket (API key; same filters)")
        },
        "/v1/analytics/messages/{message_id}": {
            "parameters": [_id_param("message_id")],
            "get": _op("One message's analysis (API key)"),
        },
        "/v1/moderation/policy": {
            "get": _op("The tenant's moderation policy (API key)"),
            "put": _op("Replace the tenant's moderation policy (API key)", body='{"input": {}}'),
        },
        "/v1/flags": {
            "get": _op("Moderation flags to review (API key; status, persona, user, cursor)")
        },
        "/v1/flags/{flag_id}": {
            "parameters": [_id_param("flag_id")],
            "get": _op("One flag (API key)"),
            "patch": _op("Resolve a flag (API key)", body='{"status": "reviewed"}'),
        },
        "/v1/feeds": {
            "get": _op("RSS/Atom feeds and their status (API key)"),
            "post": _op(
                "Follow a feed for a persona (API key)",
                body='{"persona": "ada", "url": "https://example.com/feed.xml"}',
            ),
        },
        "/v1/feeds/topics": {"get": _op("Trending topics of a persona's feeds (API key; persona)")},
        "/v1/feeds/{feed_id}": {
            "parameters": [_id_param("feed_id")],
            "get": _op("One feed (API key)"),
            "delete": _op("Stop following a feed (API key)", ok="204"),
        },
        "/v1/feeds/{feed_id}/refresh": {
            "parameters": [_id_param("feed_id")],
            "post": _op("Fetch the feed now (API key)"),
        },
        "/v1/feeds/{feed_id}/items": {
            "parameters": [_id_param("feed_id")],
            "get": _op("A feed's items with keyphrases and sentiment (API key)"),
        },
        "/v1/audio/speech": {
            "post": _op(
                "OpenAI-compatible speech synthesis",
                body='{"model": "tts", "input": "Hello!", "voice": "default", "response_format": "wav"}',
            )
        },
        "/v1/audio/transcriptions": {
            "post": _op("OpenAI-compatible transcription (multipart file)")
        },
        "/v1/media": {
            "get": _op("Media items (persona, user, kind, state, limit)"),
            "post": _op(
                "Request an image, video or avatar; progress as media.progress events",
                body='{"kind": "image", "prompt": "a lighthouse at dusk", "persona": "captain-ada"}',
                ok="202",
            ),
        },
        "/v1/media/quota": {
            "get": _op("Bytes of media stored and the tenant's quota (API key)"),
            "put": _op(
                "Set the tenant's media quota (API key)", body='{"quota_bytes": 1073741824}'
            ),
        },
        "/v1/media/files/{tenant_id}/{media_id}": {
            "parameters": [_id_param("tenant_id"), _id_param("media_id")],
            "get": _op("A media file behind a signed URL (exp, sig; byte ranges)", auth=False),
        },
        "/v1/media/{media_id}": {
            "parameters": [_id_param("media_id")],
            "get": _op("One media item, with a fresh signed URL once done"),
            "delete": _op("Cancel if unfinished and delete the item (and its unshared file)"),
        },
        "/v1/personas/{persona_id}/avatar": {
            "parameters": [_id_param("persona_id")],
            "get": _op("The persona's 3D avatar (latest imported, else generated)"),
            "post": _op(
                "Import a GLB/VRM avatar (API key; multipart file, or JSON url)",
                body='{"url": "https://models.readyplayer.me/abc.glb"}',
                ok="201",
            ),
        },
        "/v1/media/{media_id}/cancel": {
            "parameters": [_id_param("media_id")],
            "post": _op("Cancel a queued or running generation"),
        },
        "/v1/conversations/{conversation_id}/takeover": {
            "parameters": [_id_param("conversation_id")],
            "get": _op("The active takeover and the recorded ones (viewer)"),
            "post": _op(
                "Take over: pause the bot, speak in its place (moderator)",
                body='{"mode": "persona", "name": "Sam"}',
                ok="201",
            ),
            "delete": _op("Hand back to the bot (moderator)"),
        },
        "/v1/conversations/{conversation_id}/takeover/messages": {
            "parameters": [_id_param("conversation_id")],
            "post": _op(
                "The operator's message, delivered as the persona's reply (moderator)",
                body='{"text": "Hi, a human here.", "name": "Sam"}',
                ok="201",
            ),
        },
        "/v1/console/login": {
            "post": _op(
                "Sign in to the console: an operator's email and password, or an API key; "
                "returns a console token (ot1.)",
                body='{"email": "sam@example.com", "password": "correct horse battery"}',
                auth=False,
            )
        },
        "/v1/console/me": {"get": _op("The signed-in operator or key: role, tenant, branding")},
        "/v1/operators": {
            "get": _op("Operator accounts of the tenant (admin)"),
            "post": _op(
                "Create an operator account (admin)",
                body='{"email": "sam@example.com", "name": "Sam", "role": "moderator", '
                '"password": "correct horse battery"}',
                ok="201",
            ),
        },
        "/v1/operators/{operator_id}": {
            "parameters": [_id_param("operator_id")],
            "patch": _op(
                "Change an operator's name, role, password or disabled (admin)",
                body='{"role": "viewer"}',
            ),
            "delete": _op("Remove an operator account (admin)", ok="204"),
        },
        "/v1/branding": {
            "get": _op("The tenant's console and widget branding (any credential of the tenant)"),
            "put": _op(
                "Set name, logo (data: URL) and colors (admin)",
                body='{"name": "Acme Care", "colors": {"primary": "#aa0011"}}',
            ),
        },
        "/v1/conversations": {
            "get": _op(
                "Conversations by latest activity (?active=true, ?limit=): persona, user, "
                "last message, connected sockets, takeover"
            )
        },
        "/v1/analytics/volume": {
            "get": _op("Messages per hour/day bucket, people's and personas' (same filters)")
        },
        "/v1/analytics/topics": {
            "get": _op("Top topics of what people said over the range (?limit=, ?persona=)")
        },
        "/v1/webhooks/{platform}": {
            "parameters": [_id_param("platform")],
            "get": _op("Platform verification: Meta hub.challenge, X CRC (meta, x)", auth=False),
            "post": _op(
                "A signed platform delivery of comments (X-Hub-Signature-256 / "
                "x-twitter-webhooks-signature); ?app= for a tenant's app",
                auth=False,
            ),
        },
        "/v1/social/apps": {
            "get": _op("The tenant's own Meta/X apps (API key)"),
            "post": _op("Register an app: its webhook secrets (API key)", ok="201"),
        },
        "/v1/social/apps/{app_id}": {
            "parameters": [_id_param("app_id")],
            "delete": _op("Remove an app (API key)"),
        },
        "/v1/social/accounts": {
            "get": _op("Connected platform accounts (API key)"),
            "post": _op(
                "Connect an account to a persona, with credentials and a reply policy (API key)",
                body='{"platform": "instagram", "account_id": "1784...", "persona": "captain-ada", '
                '"credentials": {"access_token": "..."}, "policy": {"mode": "approval"}}',
                ok="201",
            ),
        },
        "/v1/social/accounts/{account_id}": {
            "parameters": [_id_param("account_id")],
            "get": _op("One connected account (API key)"),
            "patch": _op("Change persona, credentials, policy or enabled (API key)"),
            "delete": _op("Disconnect (API key)"),
        },
        "/v1/social/deliveries": {"get": _op("The webhook and poll delivery log (API key)")},
        "/v1/replies": {"get": _op("Comments and their replies (?status=pending, account, limit)")},
        "/v1/replies/{reply_id}": {
            "parameters": [_id_param("reply_id")],
            "get": _op("One comment and its reply (API key)"),
            "patch": _op("Edit a pending reply's text (API key)", body='{"text": "..."}'),
        },
        "/v1/replies/{reply_id}/approve": {
            "parameters": [_id_param("reply_id")],
            "post": _op("Approve (optionally edited text) and send (API key)"),
        },
        "/v1/replies/{reply_id}/reject": {
            "parameters": [_id_param("reply_id")],
            "post": _op("Reject a reply: it is never sent (API key)"),
        },
        "/v1/voices": {
            "get": _op("Cloned voices of the tenant (API key; status, limit)"),
            "post": _op(
                "Clone a voice from reference audio with a consent record "
                "(API key; multipart name, file, consent)",
                ok="201",
            ),
        },
        "/v1/voices/{voice_id}": {
            "parameters": [_id_param("voice_id")],
            "get": _op("One cloned voice with its consent record (API key)"),
            "delete": _op(
                "Revoke a cloned voice: deleted at the provider, audio deleted (API key)"
            ),
        },
        "/v1/voices/{voice_id}/audit": {
            "parameters": [_id_param("voice_id")],
            "get": _op("The voice's audit trail (API key)"),
        },
    },
}


async def openapi_json(request: Request) -> Response:
    return JSONResponse(OPENAPI)


async def docs_page(request: Request) -> Response:
    rows = []
    for path, item in OPENAPI["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}</td><td>{'bearer' if op.get('security') else '-'}</td></tr>"
            )
    page = (
        "<!doctype html><meta charset=utf-8><title>Salon API</title>"
        "<style>body{font:15px system-ui;margin:2em}td{padding:4px 12px;border-bottom:1px solid #ddd}</style>"
        "<h1>Salon HTTP API</h1><p>Machine-readable: <a href=/openapi.json>/openapi.json</a>. "
        "WebSocket protocol: <code>GET /v1/ws</code>, see docs/protocol.md.</p>"
        "<table><tr><th>method</th><th>path</th><th>what</th><th>auth</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    return HTMLResponse(page)


docs_routes = [Route("/openapi.json", openapi_json), Route("/docs", docs_page)]
