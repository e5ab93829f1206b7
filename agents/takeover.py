"""Operator takeover: pause the bot on a conversation, speak in its place, hand it back.

While a conversation is taken over, a person's messages are stored and
acknowledged as usual, and the bot does not answer them
(:attr:`agents.sessions.ConversationHooks.paused`). The operator's messages
reach the person's client through the same protocol as a bot reply
(``response.created`` / ``response.text.delta`` / ``response.done``, stored as
the assistant's messages), so a client needs no change. ``mode``:
``persona`` (the operator writes as the persona: nothing tells them apart) or
``operator`` (visible: the events carry ``speaker: {"type": "operator",
"name"}``). A reply in flight when the operator takes over is cancelled.

The state is shared by every replica (hot state: Redis in production); each
takeover is recorded (who, when, how many messages) in the ``takeovers`` table,
and announced on the operator channel ``ops:<tenant>`` and in the
conversation (``takeover.started`` / ``takeover.ended``).
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from memory.takeovers_store import TakeoverRecord, TakeoverStore

log = structlog.get_logger(__name__)

MODES = ("persona", "operator")
KEY_TTL = 24 * 3600.0  # a takeover nobody ends is released after a day


def _key(conversation_id: str) -> str:
    return f"takeover:{conversation_id}"


class TakeoverError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TakeoverService:
    def __init__(self, store: Any, takeovers: TakeoverStore, events: Any, hot: Any) -> None:
        self.store = store
        self.takeovers = takeovers
        self.events = events
        self.hot = hot
        self.conversations: Any = None  # agents.conversations.ConversationService, set after

    async def paused(self, conversation_id: str) -> bool:
        """The ``paused`` hook: is an operator speaking in this conversation?"""
        return await self.hot.get(_key(conversation_id)) is not None

    async def active(self, conversation_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self.hot.get(_key(conversation_id))
        return found

    async def start(
        self, tenant_id: str, conversation_id: str, operator: str, *, mode: str = "persona"
    ) -> TakeoverRecord:
        if mode not in MODES:
            raise TakeoverError("invalid_request", f"'mode' must be one of {', '.join(MODES)}")
        conv = await self.store.get_conversation(tenant_id, conversation_id)
        if conv is None:
            raise TakeoverError("conversation_not_found", f"no conversation {conversation_id!r}")
        current = await self.active(conversation_id)
        if current is not None:
            raise TakeoverError("already_taken_over", f"{current['operator']} has it already")
        record = await self.takeovers.start(tenant_id, conversation_id, operator, mode)
        await self.hot.put(
            _key(conversation_id),
            {"id": record.id, "operator": operator, "mode": mode, "tenant_id": tenant_id},
            ttl_seconds=KEY_TTL,
        )
        if self.conversations is not None:  # the bot stops mid-sentence if it was talking
            await self.conversations.cancel(conversation_id, reason="takeover")
        await self._announce(record, "takeover.started")
        log.info("takeover_started", conversation_id=conversation_id, mode=mode)
        return record

    async def say(
        self, tenant_id: str, conversation_id: str, operator: str, text: str
    ) -> dict[str, Any]:
        """The operator's message, as the persona's reply; returns the ``response.done`` event."""
        current = await self.active(conversation_id)
        if current is None or current["tenant_id"] != tenant_id:
            raise TakeoverError("not_taken_over", "take the conversation over first")
        if current["operator"] != operator:
            raise TakeoverError("not_yours", f"{current['operator']} has this conversation")
        text = text.strip()
        if not text:
            raise TakeoverError("invalid_request", "'text' must not be empty")
        message, _ = await self.store.add_message(
            tenant_id, conversation_id, role="assistant", content=text
        )
        response_id = "resp_" + uuid.uuid4().hex[:24]
        extra: dict[str, Any] = {"response_id": response_id}
        if current["mode"] == "operator":
            extra["speaker"] = {"type": "operator", "name": operator}
        await self.events.append(
            conversation_id, {"type": "response.created", "reply_to": [], **extra}
        )
        await self.events.append(
            conversation_id, {"type": "response.text.delta", "delta": text, **extra}
        )
        done = await self.events.append(
            conversation_id,
            {"type": "response.done", "message_id": message.id, "text": text, **extra},
        )
        await self.takeovers.count_message(tenant_id, current["id"])
        return dict(done)

    async def end(self, tenant_id: str, conversation_id: str, operator: str) -> TakeoverRecord:
        current = await self.active(conversation_id)
        if current is None or current["tenant_id"] != tenant_id:
            raise TakeoverError("not_taken_over", "this conversation is not taken over")
        await self.hot.delete(_key(conversation_id))
        record = await self.takeovers.end(tenant_id, current["id"], operator)
        if record is None:
            raise TakeoverError("not_taken_over", "this conversation is not taken over")
        await self._announce(record, "takeover.ended")
        return record

    async def _announce(self, record: TakeoverRecord, kind: str) -> None:
        public = record.to_public()
        await self.events.append(record.conversation_id, {"type": kind, "takeover": public})
        try:
            await self.events.append(f"ops:{record.tenant_id}", {"type": kind, "takeover": public})
        except Exception as exc:  # recorded and in the conversation; the channel is best effort
            log.warning("takeover_ops_event_failed", error=repr(exc))
