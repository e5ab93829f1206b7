"""Ending replies whose replica died mid-generation.

A replica that generates a reply holds the conversation's reply lock (with a
TTL it keeps refreshing) and an "active reply" record. If the lock has expired
while the record is still there, the replica died: any replica may then end
that reply for good — store the text that reached the log, append an ``error``
with code ``interrupted`` — so clients that resume elsewhere see it finish.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import structlog

from memory.eventlog import EventLog, ResumeGap
from memory.hotstate import HotState
from memory.records import ConversationRecord, MessageRecord
from memory.store import Store

log = structlog.get_logger(__name__)

FINAL_TYPES = ("response.done", "response.cancelled", "error")


def reply_lock(conversation_id: str) -> str:
    return f"reply:{conversation_id}"


def pending_key(message_id: str) -> str:
    """Hot-state key: a reply to this user message is queued (or being prepared)."""
    return f"pending:{message_id}"


async def mark(hot: HotState, message_id: str, conversation_id: str) -> None:
    """A reply to the message is queued: a resend of it must not queue another."""
    await hot.put(pending_key(message_id), {"conversation_id": conversation_id}, ttl_seconds=600)


async def unmark(hot: HotState, message_id: str) -> None:
    """The message's reply is no longer queued (best effort: the mark expires anyway)."""
    with contextlib.suppress(Exception):
        await hot.delete(pending_key(message_id))


async def report_failure(
    events: EventLog,
    hot: HotState,
    conversation_id: str,
    message_ids: Sequence[str],
    code: str,
    message: str,
) -> None:
    """Replies to these messages will not come: say so, so nobody waits forever."""
    with contextlib.suppress(Exception):
        await events.append(
            conversation_id,
            {"type": "error", "code": code, "message": message, "reply_to": list(message_ids)},
        )
    for message_id in message_ids:
        await unmark(hot, message_id)


async def never_answered(
    store: Store, hot: HotState, conv: ConversationRecord, message: MessageRecord
) -> bool:
    """A stored user message that no reply covers, none is queued for, and none is writing.

    A client resends a message it saw no acknowledgement for; such a resend is
    answered only if this holds, so a message is never answered twice.
    """
    if await hot.get(pending_key(message.id)) is not None:
        return False
    if await hot.get(active_key(conv.id)) is not None:
        return False
    recent = await store.list_messages(conv.tenant_id, conv.id, limit=50)
    ids = [m.id for m in recent]
    if message.id not in ids:
        return False  # old: long since answered or abandoned
    return all(m.role != "assistant" for m in recent[ids.index(message.id) + 1 :])


def active_key(conversation_id: str) -> str:
    return f"active:{conversation_id}"


async def recover_interrupted(
    store: Store,
    events: EventLog,
    hot: HotState,
    conv: ConversationRecord,
    *,
    owner: str,
    lock_ttl: float,
) -> bool:
    """End an orphaned reply of ``conv``; True if one was ended.

    ``owner`` must be a token of this recovery alone (never the token of a
    reply of ours), so releasing the lock here can never release a live reply.
    """
    active = await hot.get(active_key(conv.id))
    if active is None or await hot.lock_owner(reply_lock(conv.id)) is not None:
        return False
    if not await hot.acquire_lock(reply_lock(conv.id), owner, lock_ttl):
        return False  # another replica is recovering it, or a new reply started
    try:
        return await end_orphan(store, events, hot, conv)
    finally:
        await hot.release_lock(reply_lock(conv.id), owner)


async def end_orphan(
    store: Store, events: EventLog, hot: HotState, conv: ConversationRecord
) -> bool:
    """With the reply lock held by the caller: end the reply an active record names."""
    return await end_orphan_record(store, events, hot, conv, await hot.get(active_key(conv.id)))


async def end_orphan_record(
    store: Store,
    events: EventLog,
    hot: HotState,
    conv: ConversationRecord,
    active: dict[str, Any] | None,
) -> bool:
    """:func:`end_orphan` for an active record the caller read after taking the lock."""
    if active is None:
        return False
    response_id = active["response_id"]
    text, finished = _reply_so_far(
        await _events_since(events, conv.id, active.get("after", 0)), response_id
    )
    if not finished:
        try:
            await store.add_message(
                conv.tenant_id,
                conv.id,
                role="assistant",
                content=text,
                status="error",
                response_id=response_id,
                message_id=active["message_id"],
            )
        except Exception:  # already stored (it died after storing): keep that
            log.info("interrupted_reply_already_stored", conversation_id=conv.id)
        await events.append(
            conv.id,
            {
                "type": "error",
                "code": "interrupted",
                "message": "the server generating this reply stopped; your message is kept, "
                "send another to get an answer",
                "response_id": response_id,
                "message_id": active["message_id"],
                "text": text,
            },
        )
        log.warning("reply_interrupted", conversation_id=conv.id, response_id=response_id)
    await hot.delete(active_key(conv.id))
    return not finished


async def _events_since(events: EventLog, conversation_id: str, after: int) -> list[dict[str, Any]]:
    try:
        return await events.replay(conversation_id, after)
    except ResumeGap:
        return []  # the log lost it (e.g. Redis restarted): end the reply with no text


def _reply_so_far(events: list[dict[str, Any]], response_id: str) -> tuple[str, bool]:
    parts: list[str] = []
    for event in events:
        if event.get("response_id") != response_id:
            continue
        if event["type"] == "response.text.delta":
            parts.append(event["delta"])
        elif event["type"] in FINAL_TYPES:
            return "".join(parts), True
    return "".join(parts), False
