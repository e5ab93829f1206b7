"""Following one reply in a conversation's event log, without a socket.

Callers that submit a message and want its answer (the OpenAI-compatible
API, comment automation) read the log from where they were: the reply to
their message may queue behind another one, so they wait for the
``response.created`` whose ``reply_to`` names their message, then take that
response's events to its end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from memory.eventlog import EventLog, follow


async def reply_events(
    events: EventLog, conv_id: str, after: int, message_id: str
) -> AsyncIterator[dict[str, Any]]:
    """The events of the reply that answers ``message_id`` (it may queue behind another)."""
    response_id: str | None = None
    async for event in follow(events, conv_id, after):
        kind = event["type"]
        if response_id is None:
            if kind == "response.created" and message_id in event.get("reply_to", []):
                response_id = event["response_id"]
            continue
        if event.get("response_id") != response_id:
            continue
        yield event
        if kind in ("response.done", "response.cancelled", "error"):
            return


@dataclass(frozen=True)
class FinishedReply:
    """How a reply ended: its text, or the error that ended it."""

    text: str
    message_id: str | None = None
    error_code: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None


async def finished_reply(
    events: EventLog, conv_id: str, after: int, message_id: str
) -> FinishedReply:
    """Wait for the reply to ``message_id`` to end; its stored text or its error."""
    parts: list[str] = []
    async for event in reply_events(events, conv_id, after, message_id):
        if event["type"] == "response.text.delta":
            parts.append(event["delta"])
        elif event["type"] == "error":
            return FinishedReply(
                "".join(parts), None, event.get("code", "error"), event.get("message")
            )
        elif event["type"] == "response.cancelled":
            return FinishedReply("".join(parts), None, "cancelled", "the reply was cancelled")
        elif event["type"] == "response.done":
            return FinishedReply(event.get("text", "".join(parts)), event.get("message_id"))
    return FinishedReply("".join(parts), None, "llm_error", "the reply ended unexpectedly")
