"""Conversations: open a session, accept messages once, run replies, cancel them.

This is the logic every transport shares (WebSocket, OpenAI-compatible HTTP,
later comment webhooks). It writes every server event to the event log and
never sends anything itself: transports follow the log.

Replies run as tasks owned by this service, not by a socket, so a client that
drops mid-reply does not stop the reply; it reconnects and resumes from the log.
One conversation has at most one reply in flight; messages that arrive
meanwhile wait, and the next reply answers all of them together.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import structlog

from agents import telemetry
from agents.llm.base import GenerationParams, LLMProvider
from agents.prompt import HistoryItem, build_messages
from agents.turns import Turn, TurnResult
from memory.eventlog import EventLog
from memory.ids import new_id
from memory.records import ConversationRecord, MessageRecord, PersonaRecord, UserRecord
from memory.store import Store

log = structlog.get_logger(__name__)


class ConversationError(Exception):
    """A request the service refuses; ``code`` goes to the client as is."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Session:
    persona: PersonaRecord
    user: UserRecord
    conversation: ConversationRecord


@dataclass
class TurnSettings:
    max_reply_tokens: int = 256
    temperature: float = 0.7
    history_messages: int = 50
    coalesce_seconds: float = 0.015
    max_message_chars: int = 8000


@dataclass
class _Pending:
    message: MessageRecord
    params: GenerationParams | None = None
    instructions: str | None = None


@dataclass
class _Runner:
    session: Session
    pending: list[_Pending] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    turn: Turn | None = None


class ConversationService:
    def __init__(
        self,
        store: Store,
        events: EventLog,
        provider: LLMProvider,
        settings: TurnSettings | None = None,
    ) -> None:
        self.store = store
        self.events = events
        self.provider = provider
        self.settings = settings or TurnSettings()
        self._runners: dict[str, _Runner] = {}
        self._closing = False

    # -- sessions -----------------------------------------------------------

    async def open(
        self,
        tenant_id: str,
        *,
        persona: str,
        user_external_id: str,
        user_name: str | None = None,
        conversation_id: str | None = None,
        channel: str = "ws",
        reuse_latest: bool = False,
    ) -> Session:
        """Find or create the conversation of this user with this persona.

        ``conversation_id`` must name a conversation of this user and persona
        in this tenant; anything else is ``conversation_not_found`` (we do not
        tell a caller that another user's conversation exists).
        """
        persona_rec = await self.store.get_persona(tenant_id, persona)
        if persona_rec is None:
            raise ConversationError("unknown_persona", f"no persona {persona!r} in this tenant")
        user = await self.store.get_or_create_user(tenant_id, user_external_id, user_name)
        conv: ConversationRecord | None
        if conversation_id:
            conv = await self.store.get_conversation(tenant_id, conversation_id)
            if conv is None or conv.user_id != user.id or conv.persona_id != persona_rec.id:
                raise ConversationError(
                    "conversation_not_found", f"no conversation {conversation_id!r} for this user"
                )
        else:
            conv = None
            if reuse_latest:
                conv = await self.store.latest_conversation(
                    tenant_id, persona_id=persona_rec.id, user_id=user.id, channel=channel
                )
            if conv is None:
                conv = await self.store.create_conversation(
                    tenant_id, persona_id=persona_rec.id, user_id=user.id, channel=channel
                )
        await self.events.ensure_floor(conv.id, conv.last_seq)
        return Session(persona=persona_rec, user=user, conversation=conv)

    # -- messages -----------------------------------------------------------

    async def submit(
        self,
        session: Session,
        *,
        client_id: str | None,
        text: str,
        params: GenerationParams | None = None,
        instructions: str | None = None,
    ) -> tuple[MessageRecord, bool]:
        """Store a user message and schedule a reply; a repeated ``client_id`` does nothing.

        Returns the stored message and whether it was new. For a new message
        ``message.accepted`` is appended to the log before this returns.
        """
        if self._closing:
            raise ConversationError("shutdown", "the server is shutting down")
        if not text.strip():
            raise ConversationError("invalid_message", "text must not be empty")
        if len(text) > self.settings.max_message_chars:
            raise ConversationError(
                "message_too_long",
                f"text is longer than {self.settings.max_message_chars} characters",
            )
        conv = session.conversation
        message, created = await self.store.add_message(
            conv.tenant_id, conv.id, role="user", content=text, client_id=client_id
        )
        if not created:
            return message, False
        telemetry.MESSAGES.labels("user", conv.channel).inc()
        accepted: dict[str, Any] = {
            "type": "message.accepted",
            "message_id": message.id,
            "text": text,
        }
        if client_id is not None:
            accepted["id"] = client_id
        await self.events.append(conv.id, accepted)
        runner = self._runners.get(conv.id)
        if runner is None:
            runner = self._runners[conv.id] = _Runner(session=session)
        runner.pending.append(_Pending(message, params, instructions))
        if runner.task is None:
            runner.task = asyncio.create_task(self._run(conv.id), name=f"replies:{conv.id}")
        return message, True

    def cancel(self, conversation_id: str, reason: str = "cancelled") -> bool:
        """Stop the reply in flight for this conversation; False if there is none."""
        runner = self._runners.get(conversation_id)
        if runner is None or runner.turn is None:
            return False
        runner.turn.cancel(reason)
        return True

    def replying(self, conversation_id: str) -> bool:
        runner = self._runners.get(conversation_id)
        return bool(runner and runner.turn)

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Refuse new messages; end replies in flight with ``error`` code ``shutdown``."""
        self._closing = True
        for runner in list(self._runners.values()):
            runner.pending.clear()
            if runner.turn is not None:
                runner.turn.cancel("shutdown")
        tasks = [r.task for r in self._runners.values() if r.task is not None]
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=timeout)
            for task in stuck:
                task.cancel()

    # -- replies ------------------------------------------------------------

    async def _run(self, conversation_id: str) -> None:
        runner = self._runners[conversation_id]
        try:
            while runner.pending and not self._closing:
                batch, runner.pending = runner.pending, []
                try:
                    await self._reply(runner, batch)
                except Exception:
                    log.exception("reply_failed", conversation_id=conversation_id)
        finally:
            runner.task = None
            runner.turn = None
            if not runner.pending:
                self._runners.pop(conversation_id, None)

    async def _reply(self, runner: _Runner, batch: list[_Pending]) -> TurnResult:
        session = runner.session
        conv = session.conversation
        params = next((p.params for p in reversed(batch) if p.params), None) or GenerationParams(
            max_tokens=self.settings.max_reply_tokens, temperature=self.settings.temperature
        )
        instructions = next((p.instructions for p in reversed(batch) if p.instructions), None)
        history = await self.store.list_messages(
            conv.tenant_id, conv.id, limit=self.settings.history_messages
        )
        messages = build_messages(
            session.persona.data,
            [HistoryItem(m.role, m.content) for m in history],
            user_name=session.user.name or session.user.external_id,
            context_window=self.provider.capabilities.context_window,
            reply_tokens=params.max_tokens,
            count_tokens=self.provider.count_tokens,
            extra_instructions=instructions,
        )
        response_id = new_id("resp")
        message_id = new_id("msg")
        turn = Turn(
            self.provider,
            response_id=response_id,
            messages=messages,
            params=params,
            coalesce_seconds=self.settings.coalesce_seconds,
            created_fields={"reply_to": [p.message.id for p in batch]},
        )
        runner.turn = turn

        async def emit(event: dict[str, Any]) -> None:
            await self.events.append(conv.id, event)

        async def finish(result: TurnResult) -> str:
            # The reply is stored before its final event is sent, so a client
            # that sees response.done can always find the message in history.
            if result.text or result.status == "complete":
                await self.store.add_message(
                    conv.tenant_id,
                    conv.id,
                    role="assistant",
                    content=result.text,
                    status=result.status,
                    response_id=result.response_id,
                    message_id=message_id,
                )
                telemetry.MESSAGES.labels("assistant", conv.channel).inc()
            return message_id

        try:
            result = await turn.run(emit, finish)
        finally:
            runner.turn = None
            with contextlib.suppress(Exception):
                await self.store.record_last_seq(
                    conv.tenant_id, conv.id, await self.events.latest_seq(conv.id)
                )
        log.info(
            "reply_finished",
            conversation_id=conv.id,
            response_id=response_id,
            status=result.status,
            pieces=result.pieces,
        )
        return result
