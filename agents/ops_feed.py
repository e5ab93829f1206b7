"""The operator channel ``ops:<tenant>``: what the console's live views follow.

Other parts already announce there (moderation flags, comment replies,
takeovers). This module adds ``conversation.activity``, one small event per
stored message of any conversation of the tenant, so the console's list of
active conversations moves without polling. It runs as an ``after_message``
hook (in the background, after the message is stored): a failure is logged by
the hook runner and costs the person nothing.
"""

from __future__ import annotations

from typing import Any

from agents.sessions import AfterMessage, Session
from memory.records import MessageRecord

PREVIEW_CHARS = 160
# The event log stamps each event with its stream's name as ``conversation_id``
# ("ops:<tenant>"); an operator event names the conversation it is about here,
# and the operator socket hands it out as ``conversation_id`` (:func:`for_operators`).
ABOUT = "about_conversation"


def ops_stream(tenant_id: str) -> str:
    """The event-log stream operators of ``tenant_id`` follow."""
    return f"ops:{tenant_id}"


def activity_event(session: Session, message: MessageRecord) -> dict[str, Any]:
    text = message.content
    preview = text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
    return {
        "type": "conversation.activity",
        ABOUT: session.conversation.id,
        "persona": {
            "id": session.persona.id,
            "slug": session.persona.slug,
            "name": session.persona.name,
        },
        "user": {"id": session.user.external_id, "name": session.user.name},
        # not "channel": on the operator socket that names the stream ("ops")
        "conversation_channel": session.conversation.channel,
        "message": {
            "id": message.id,
            "role": message.role,
            "preview": preview,
            "created_at": message.created_at.isoformat(),
        },
    }


def activity_hook(events: Any) -> AfterMessage:
    """An ``after_message`` hook appending ``conversation.activity`` to the operator channel."""

    async def announce(session: Session, message: MessageRecord) -> None:
        await events.append(
            ops_stream(session.conversation.tenant_id), activity_event(session, message)
        )

    return announce


def for_operators(event: dict[str, Any]) -> dict[str, Any]:
    """An ``ops:<tenant>`` event as the operator socket sends it: ``channel: "ops"``, and
    ``conversation_id`` only where the event is about a conversation."""
    out = {k: v for k, v in event.items() if k not in ("conversation_id", ABOUT)}
    about = event.get(ABOUT)
    if about is None and isinstance(event.get("takeover"), dict):
        about = event["takeover"].get("conversation_id")
    if about is None and isinstance(event.get("flag"), dict):
        about = event["flag"].get("conversation_id")
    if about is not None:
        out["conversation_id"] = about
    out["channel"] = "ops"
    return out
