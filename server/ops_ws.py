"""``GET /v1/ops/ws``: the operator channel the console follows.

One socket per console tab. Once accepted it forwards the tenant's operator
events (``ops:<tenant>``: ``conversation.activity``, ``moderation.flagged``,
``reply.*``, ``comment.*``, ``takeover.*``), each marked ``"channel": "ops"``.
The operator can also ``watch`` conversations: their events are forwarded
exactly as the person's own socket gets them (same ``seq``), so the console
shows tokens as they stream. Read-only: acting (taking over, approving) goes
through the HTTP API, where roles are checked per action.

Auth: ``Authorization: Bearer`` (an API key or a console token) or
``?token=<console token>`` (browsers cannot set headers on a WebSocket; API keys
never go in a URL). Any role may watch: a viewer's console is live too.
Origin allowlist, frame rate limit and the size cap are those of ``/v1/ws``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from agents.ops_feed import for_operators, ops_stream
from memory.eventlog import ResumeGap, event_text, follow
from server import metrics
from server.auth import CONSOLE_TOKEN_PREFIX, Principal, authenticate, bearer_token
from server.limits import TokenBucket, origin_allowed
from server.state import AppState
from server.ws import CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED, _refuse

log = structlog.get_logger(__name__)

MAX_WATCHES = 20
# The credential is checked again this often (and on every watch): a disabled
# operator, a revoked key or an expired token loses the socket, not only new ones.
RECHECK_SECONDS = 60.0
CLOSE_CREDENTIAL_GONE = 4401


async def ops_endpoint(ws: WebSocket) -> None:
    state: AppState = ws.app.state.salon
    if not origin_allowed(
        ws.headers.get("origin"), ws.headers.get("host"), state.settings.allowed_origins
    ):
        await _refuse(ws, 403, "origin_not_allowed", "this Origin is not allowed", CLOSE_FORBIDDEN)
        return
    header = bearer_token(ws.headers.get("authorization"))
    query = ws.query_params.get("token")
    # API keys only in the header (URLs end up in logs); console tokens either way.
    credential = header or (query if query and query.startswith(CONSOLE_TOKEN_PREFIX) else None)
    principal = await _authenticate(state, credential)
    if principal is None or principal.is_session:
        await _refuse(
            ws,
            401,
            "unauthorized",
            "an operator's console token or a tenant API key is required",
            CLOSE_UNAUTHORIZED,
        )
        return
    if not principal.allows("viewer"):
        await _refuse(ws, 403, "forbidden", "this needs the viewer role", CLOSE_FORBIDDEN)
        return
    if len(state.connections) >= state.settings.max_connections:
        await _refuse(ws, 503, "server_busy", "too many connections", 1013)
        return
    await ws.accept()
    conn = OpsConnection(ws, state, principal, credential or "")
    state.connections.add(conn)
    metrics.CONNECTIONS.inc()
    try:
        await conn.run()
    finally:
        state.connections.discard(conn)
        metrics.CONNECTIONS.dec()


async def _authenticate(state: AppState, credential: str | None) -> Principal | None:
    return await authenticate(state.store, state.tokens, credential, console=state.console)


class OpsConnection:
    """One operator socket: the tenant's operator stream plus the conversations watched."""

    def __init__(
        self, ws: WebSocket, state: AppState, principal: Principal, credential: str
    ) -> None:
        self.ws = ws
        self.state = state
        self.principal = principal
        self._credential = credential
        self.watches: dict[str, asyncio.Task[None]] = {}
        self._frames = TokenBucket(rate=20, burst=40)
        self._gone = False

    async def run(self) -> None:
        stream = ops_stream(self.principal.tenant_id)
        latest = await self.state.events.latest_seq(stream)
        await self.send(
            {
                "type": "ops.ready",
                "channel": "ops",
                "seq": latest,
                "tenant_id": self.principal.tenant_id,
                "role": self.principal.role,
            }
        )
        ops = asyncio.create_task(self._forward(stream, latest, ops=True))
        recheck = asyncio.create_task(self._recheck_periodically())
        try:
            while not self._gone:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self._handle(message.get("text"))
        except WebSocketDisconnect:
            pass
        finally:
            for task in [ops, recheck, *self.watches.values()]:
                task.cancel()
            for task in [ops, recheck, *self.watches.values()]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def refresh_presence(self) -> None:
        """Operators are not part of any conversation's presence (the app's maintenance
        loop calls this on every connection)."""

    async def still_allowed(self) -> bool:
        """Check the credential again; on failure close the socket (4401) and say False."""
        try:
            principal = await _authenticate(self.state, self._credential)
        except Exception:  # a store outage is not the operator's fault: keep the socket
            return True
        if (
            principal is not None
            and principal.tenant_id == self.principal.tenant_id
            and principal.allows("viewer")
        ):
            self.principal = principal
            return True
        await self.error("unauthorized", "the credential is no longer valid; sign in again")
        self._gone = True
        with contextlib.suppress(Exception):
            await self.ws.close(CLOSE_CREDENTIAL_GONE, "credential no longer valid")
        return False

    async def _recheck_periodically(self) -> None:
        while not self._gone:
            await asyncio.sleep(RECHECK_SECONDS)
            if not await self.still_allowed():
                return

    async def send(self, event: dict[str, Any]) -> bool:
        if self._gone:
            return False
        try:
            await self.ws.send_text(event_text(event))  # logged events: encoded once
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._gone = True
            return False
        return True

    async def error(self, code: str, message: str, **extra: Any) -> None:
        await self.send({"type": "error", "code": code, "message": message, **extra})

    async def _forward(self, stream: str, after: int, *, ops: bool) -> None:
        """Follow one stream onto the socket; gaps and outages are said, then ridden out."""
        last, backoff, warned = after, 0.2, False
        while True:
            try:
                async for event in follow(self.state.events, stream, last):
                    last = event["seq"]
                    backoff, warned = 0.2, False
                    if not await self.send(for_operators(event) if ops else event):
                        return
            except asyncio.CancelledError:
                raise
            except ResumeGap as gap:
                extra = {} if ops else {"conversation_id": stream}
                await self.error("resume_gap", str(gap), **extra)
                last = max(gap.latest, 0)
            except Exception as exc:
                log.warning("ops_follow_failed", stream=stream, error=repr(exc))
                if not warned:
                    await self.error(
                        "event_log_unavailable",
                        "live events are delayed; they will resume by themselves",
                    )
                    warned = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _handle(self, raw: str | None) -> None:
        if not self._frames.take():
            await self.error("rate_limited", "too many frames; slow down")
            return
        if raw is None:
            await self.error("invalid_frame", "send JSON text frames")
            return
        try:
            event = json.loads(raw)
        except ValueError:
            await self.error("invalid_json", "the frame is not JSON")
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            await self.error("invalid_event", "a frame is a JSON object with a 'type'")
            return
        kind = event["type"]
        if kind == "ping":
            await self.send({"type": "pong", **({"id": event["id"]} if "id" in event else {})})
        elif kind == "watch":
            await self._watch(event)
        elif kind == "unwatch":
            conv_id = event.get("conversation_id")
            task = self.watches.pop(conv_id, None) if isinstance(conv_id, str) else None
            if task is not None:
                task.cancel()
            await self.send({"type": "unwatch.done", "conversation_id": conv_id})
        else:
            await self.error("unknown_event", f"unknown type {kind!r} (watch, unwatch, ping)")

    async def _watch(self, event: dict[str, Any]) -> None:
        conv_id, after = event.get("conversation_id"), event.get("resume_after")
        if not isinstance(conv_id, str) or not conv_id:
            await self.error("invalid_event", "watch: 'conversation_id' is required")
            return
        if after is not None and (
            not isinstance(after, int) or isinstance(after, bool) or after < 0
        ):
            await self.error("invalid_event", "watch: 'resume_after' must be a seq (integer >= 0)")
            return
        if not await self.still_allowed():
            return
        tenant = self.principal.tenant_id
        if await self.state.store.get_conversation(tenant, conv_id) is None:
            await self.error(
                "conversation_not_found", f"no conversation {conv_id!r}", conversation_id=conv_id
            )
            return
        if conv_id not in self.watches and len(self.watches) >= MAX_WATCHES:
            await self.error(
                "too_many_watches", f"at most {MAX_WATCHES} conversations at once; unwatch one"
            )
            return
        previous = self.watches.pop(conv_id, None)
        if previous is not None:
            previous.cancel()
        latest = await self.state.events.latest_seq(conv_id)
        # Past the end (a stale client): from now, rather than waiting for a seq to come.
        start = latest if after is None else min(after, latest)
        await self.send(
            {
                "type": "watch.ready",
                "conversation_id": conv_id,
                "seq": latest,
                "replying": await self.state.service.replying(conv_id),
            }
        )
        self.watches[conv_id] = asyncio.create_task(self._forward(conv_id, start, ops=False))
