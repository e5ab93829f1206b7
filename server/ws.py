"""``GET /v1/ws``: pumps frames between a socket and the conversation service.

No conversation logic lives here. Incoming frames are parsed and handed to
:class:`agents.conversations.ConversationService`; outgoing events come from
following the conversation's event log, so what a socket sends is exactly
what the log holds, in ``seq`` order, on any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from agents.conversations import ConversationError, Session
from memory.eventlog import ResumeGap, event_text, follow_batches
from server import metrics, ws_media
from server.auth import Principal, authenticate, bearer_token
from server.frames import FrameWriter, SocketGone
from server.limits import TokenBucket, origin_allowed
from server.logging import RAW_SEND
from server.protocol import (
    InputAudioAppend,
    InputAudioCommit,
    MediaCancel,
    MediaCreate,
    MessageCreate,
    Ping,
    ProtocolError,
    ResponseCancel,
    SessionStart,
    parse_client_event,
)
from server.state import AppState
from server.ws_voice import ConnectionVoice

log = structlog.get_logger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
PRESENCE_TTL = 90.0  # refreshed every 30 s by the app's maintenance loop


async def _refuse(ws: WebSocket, status: int, code: str, message: str, close_code: int) -> None:
    metrics.REFUSED.labels(code).inc()
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(
            JSONResponse({"error": {"code": code, "message": message}}, status)
        )
    else:  # servers without the denial extension: accept, then close with our code
        await ws.accept()
        await ws.close(close_code, message)


async def websocket_endpoint(ws: WebSocket) -> None:
    state: AppState = ws.app.state.salon
    settings = state.settings
    if not origin_allowed(
        ws.headers.get("origin"), ws.headers.get("host"), settings.allowed_origins
    ):
        await _refuse(ws, 403, "origin_not_allowed", "this Origin is not allowed", CLOSE_FORBIDDEN)
        return
    header = bearer_token(ws.headers.get("authorization"))
    query = ws.query_params.get("token")
    # API keys only in the header: URLs end up in logs and browser history.
    principal = await authenticate(state.store, state.tokens, header) if header else None
    if principal is None and query and not header:
        principal = await authenticate(state.store, state.tokens, query, allow_api_key=False)
    if principal is None:
        await _refuse(
            ws,
            401,
            "unauthorized",
            "a valid API key or session token is required",
            CLOSE_UNAUTHORIZED,
        )
        return
    if len(state.connections) >= settings.max_connections:
        await _refuse(ws, 503, "server_busy", "too many connections", 1013)
        return
    # Which replica holds this socket: for operators and the topology tests.
    await ws.accept(headers=[(b"x-salon-replica", state.service.replica_id.encode())])
    conn = Connection(ws, state, principal)
    state.connections.add(conn)
    metrics.CONNECTIONS.inc()
    try:
        await conn.run()
    finally:
        state.connections.discard(conn)
        metrics.CONNECTIONS.dec()


class Connection:
    """One accepted socket: a reader loop and (after session.start) a log follower.

    Both write to the socket directly, with no outbox queue and sender task in
    between (less memory per idle socket, one task switch less per delta). The
    order of events holds: uvicorn writes each frame before its ``send`` can
    suspend, and while the client is slow to read (the transport paused) the
    writers wait for it in FIFO order. A client that does not read therefore
    stops its own reader and follower, and no one else's.
    """

    def __init__(self, ws: WebSocket, state: AppState, principal: Principal) -> None:
        self.id = uuid.uuid4().hex
        self.ws = ws
        self.state = state
        self.principal = principal
        self.session: Session | None = None
        self._follower: asyncio.Task[None] | None = None
        self._gone = False  # a write failed: the socket is closed
        # Frames go straight to the ASGI server (server/logging.py RAW_SEND).
        self._frames_out = FrameWriter(ws.scope.get(RAW_SEND) or ws.send)
        per_minute = state.settings.messages_per_minute
        self._messages = TokenBucket(rate=per_minute / 60, burst=max(1, per_minute // 4 or 1))
        self._frames = TokenBucket(rate=100, burst=200)
        self._since = time.time()
        self.voice = ConnectionVoice(self)  # modalities, input audio (server/ws_voice.py)

    async def run(self) -> None:
        try:
            while not self._gone:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                metrics.FRAMES_IN.inc()
                raw = message.get("text")
                await self._handle(raw if raw is not None else message.get("bytes", b""))
        except WebSocketDisconnect:
            pass
        finally:
            await self._leave()
            if self._follower is not None:
                self._follower.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._follower

    # -- output ---------------------------------------------------------------

    async def send(self, event: dict[str, Any]) -> bool:
        """Put one event on the socket; False once the socket is gone."""
        return await self.send_many((event,))

    async def send_many(self, events: Sequence[dict[str, Any]]) -> bool:
        """Put events on the socket in order, in one write where the server allows."""
        if self._gone:
            return False
        try:
            await self._frames_out.write([event_text(e) for e in events])  # logged: encoded once
        except (WebSocketDisconnect, SocketGone, RuntimeError, OSError):
            self._gone = True  # the reader sees the disconnect and cleans up
            return False
        metrics.EVENTS_OUT.inc(len(events))
        return True

    async def error(self, code: str, message: str, event_id: str | None = None) -> None:
        metrics.CLIENT_ERRORS.labels(code).inc()
        event: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if event_id is not None:
            event["id"] = event_id
        if self.session is not None:
            event["conversation_id"] = self.session.conversation.id
        await self.send(event)

    async def _follow(self, conversation_id: str, after: int) -> None:
        """Forward the log to the socket; ride out event-log outages with backoff."""
        last = after
        backoff = 0.2
        warned = False
        while True:
            try:
                async for batch in follow_batches(self.state.events, conversation_id, last):
                    last = batch[-1]["seq"]
                    if self.session is not None and any(
                        e["type"] == "response.created" for e in batch
                    ):
                        # if the replica writing it dies, this one ends it
                        self.state.service.watch(self.session.conversation)
                    backoff, warned = 0.2, False
                    if not await self.send_many(batch):
                        return  # the reader sees the disconnect and cleans up
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, ResumeGap):
                    # The log lost events while we were behind (trimmed, or Redis
                    # restarted): say so, then carry on live.
                    await self.error("resume_gap", str(exc))
                    try:
                        last = await self._after_gap(conversation_id, exc, last)
                        continue
                    except Exception as floor_exc:  # the store is down: retry below
                        exc = floor_exc
                log.warning("follow_failed", conversation_id=conversation_id, error=repr(exc))
                if not warned:
                    await self.error(
                        "event_log_unavailable",
                        "live events are delayed; they will resume by themselves",
                    )
                    warned = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def refresh_presence(self) -> None:
        """Say (again) that this socket is on its conversation, on this replica."""
        if self.session is None:
            return
        await self.state.hot.set_presence(
            f"conv:{self.session.conversation.id}",
            self.id,
            {
                "replica": self.state.service.replica_id,
                "user": self.session.user.external_id,
                "kind": self.principal.kind,
                "since": self._since,
            },
            PRESENCE_TTL,
        )

    async def _leave(self) -> None:
        if self.session is not None:
            with contextlib.suppress(Exception):
                await self.state.hot.clear_presence(f"conv:{self.session.conversation.id}", self.id)

    async def _after_gap(self, conversation_id: str, gap: ResumeGap, last: int) -> int:
        """Where to follow from after a gap; a log that is behind the client is raised to it."""
        if gap.after > gap.latest:
            # The log was reset (e.g. a Redis restart): seq must still rise past
            # what this client has seen — but a client cannot push it further
            # than the conversation can have reached (it would wipe the log for
            # everyone else).
            known = self.session.conversation.last_seq if self.session else 0
            ceiling = max(known, gap.latest) + self.state.settings.event_log_max_events
            floor = min(last, ceiling)
            await self.state.events.ensure_floor(conversation_id, floor)
            return floor
        return gap.latest

    # -- input ----------------------------------------------------------------

    async def _handle(self, raw: str | bytes) -> None:
        if not self._frames.take():
            await self.error("rate_limited", "too many frames; slow down")
            return
        try:
            event = parse_client_event(raw)
        except ProtocolError as exc:
            await self.error(exc.code, exc.message, exc.event_id)
            return
        try:
            if isinstance(event, Ping):
                pong: dict[str, Any] = {"type": "pong"}
                if event.id is not None:
                    pong["id"] = event.id
                await self.send(pong)
            elif isinstance(event, SessionStart):
                await self._session_start(event)
            elif isinstance(event, MessageCreate):
                await self.message_create(event)
            elif isinstance(event, ResponseCancel):
                await self._cancel(event)
            elif isinstance(event, InputAudioAppend):
                await self.voice.append(event)
            elif isinstance(event, InputAudioCommit):
                await self.voice.commit(event)
            elif isinstance(event, MediaCreate):
                await ws_media.media_create(self, event)
            elif isinstance(event, MediaCancel):
                await ws_media.media_cancel(self, event)
        except ConversationError as exc:
            await self.error(exc.code, str(exc), getattr(event, "id", None))
        except Exception as exc:
            # A store is unreachable: nothing was acknowledged, so nothing is lost;
            # the client sends the same event (same id) again.
            log.warning("event_failed", type=event.type, error=repr(exc))
            await self.error(
                "unavailable",
                "the server cannot store this right now; send it again (same id) shortly",
                getattr(event, "id", None),
            )

    async def _session_start(self, event: SessionStart) -> None:
        principal = self.principal
        store = self.state.store
        output = self.voice.output_format(event.output_audio_format)  # before anything changes
        if isinstance(output, Exception):
            await self.error(output.code, str(output))
            return
        if principal.is_session:
            if event.user is not None and event.user.id != principal.user_id:
                await self.error("forbidden", "this session token belongs to another user")
                return
            user_id = principal.user_id or ""
            user_name = (event.user.name if event.user else None) or principal.user_name
            if principal.persona is not None:
                record = await store.get_persona(principal.tenant_id, event.persona)
                if record is None or record.id != principal.persona:
                    await self.error("forbidden", "this session token is for another persona")
                    return
        else:
            if event.user is None:
                await self.error("invalid_event", "session.start: user is required with an API key")
                return
            user_id, user_name = event.user.id, event.user.name
        session = await self.state.service.open(
            principal.tenant_id,
            persona=event.persona,
            user_external_id=user_id,
            user_name=user_name,
            conversation_id=event.conversation_id,
        )
        if self._follower is not None:  # a second session.start switches conversations
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self._leave()
        self.session = session
        vad_problem = await self.voice.start(list(event.modalities), event.turn_detection, output)
        conv_id = session.conversation.id
        await self.refresh_presence()
        events = self.state.events
        latest = await events.latest_seq(conv_id)
        after = latest
        gap: ResumeGap | None = None
        if event.resume_after is not None:
            try:
                await events.replay(conv_id, event.resume_after)
                after = event.resume_after
            except ResumeGap as exc:
                gap = exc
                after = await self._after_gap(conv_id, exc, event.resume_after)
        await self.send(
            {
                "type": "session.ready",
                "conversation_id": conv_id,
                "persona": session.persona.id,
                "persona_slug": session.persona.slug,
                "user": {"id": session.user.external_id, "name": session.user.name},
                "seq": max(latest, after),
                "replying": await self.state.service.replying(conv_id),
                "modalities": self.voice.modalities,
                "turn_detection": self.voice.turn_detection,
                "output_audio_format": self.voice.output.as_dict(),
            }
        )
        if vad_problem is not None:
            await self.error("vad_unavailable", vad_problem)
        if gap is not None:
            await self.error(
                "resume_gap",
                f"events after seq {event.resume_after} are no longer kept; reload history from "
                f"GET /v1/conversations/{conv_id}/messages",
            )
        self._follower = asyncio.create_task(self._follow(conv_id, after))

    async def message_create(self, event: MessageCreate) -> None:
        """Accept a message (typed, or transcribed from input audio) once, within the limits."""
        if self.session is None:
            await self.error("no_session", "send session.start first", event.id)
            return
        if not self._messages.take():
            await self.error(
                "rate_limited",
                f"more than {self.state.settings.messages_per_minute} messages per minute; "
                "the message was not accepted, send it again later",
                event.id,
            )
            return
        principal = self.principal
        user_key = f"user-rate:{principal.tenant_id}:{self.session.user.id}"
        if not await self.state.hot.hit(user_key, self.state.settings.user_messages_per_minute, 60):
            await self.error(
                "rate_limited",
                "too many messages from this user; the message was not accepted, send it again later",
                event.id,
            )
            return
        message, created = await self.state.service.submit(
            self.session, client_id=event.id, text=event.text, audio=self.voice.reply_format
        )
        if not created:
            # Processed before: acknowledge again (outside the log) and do nothing else.
            await self.send(
                {
                    "type": "message.accepted",
                    "id": event.id,
                    "message_id": message.id,
                    "conversation_id": self.session.conversation.id,
                    "duplicate": True,
                }
            )

    async def _cancel(self, event: ResponseCancel) -> None:
        if self.session is None:
            await self.error("no_session", "send session.start first", event.id)
            return
        if not await self.state.service.cancel(
            self.session.conversation.id, played_ms=event.played_ms
        ):
            await self.error("no_active_response", "no reply is being generated", event.id)
