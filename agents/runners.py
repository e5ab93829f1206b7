"""What :class:`agents.conversations.ConversationService` keeps per conversation."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog

from agents.llm.base import GenerationParams
from agents.sessions import Session
from agents.turns import Turn
from agents.voice import OutputFormat
from memory.records import MessageRecord

log = structlog.get_logger(__name__)


@dataclass
class Pending:
    """A stored user message waiting for the reply that answers it."""

    message: MessageRecord
    params: GenerationParams | None = None
    instructions: str | None = None
    audio: OutputFormat | bool = False  # from an audio session: spoken, in this format
    # Its message.accepted, being logged: queued before it is, so the reply's
    # lock is taken meanwhile (one round trip less before the first token).
    accepted: asyncio.Future[dict[str, Any]] | None = None
    accepted_seq: int = 0  # of its message.accepted: the reply's events come after it


async def acknowledged(batch: list[Pending]) -> list[Pending]:
    """``batch`` once each message's ``message.accepted`` is logged, without any whose failed.

    A message whose acknowledgement was not logged was refused to its client,
    which sends it again (same id); that resend is the one answered.
    """
    kept = []
    for pending in batch:
        if pending.accepted is not None:
            try:
                pending.accepted_seq = (await pending.accepted)["seq"]
            except Exception as exc:
                log.info(
                    "reply_skips_unacknowledged", message_id=pending.message.id, error=repr(exc)
                )
                continue
        kept.append(pending)
    return kept


@dataclass
class Runner:
    """One conversation's replies on this replica: the queue, the task, the turn."""

    session: Session
    pending: list[Pending] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    turn: Turn | None = None
    # A cancel that arrives while the next reply is being prepared (before its
    # Turn exists) is kept here and applied as soon as the Turn is created.
    cancel_reason: str | None = None
    preparing: bool = False  # a batch was taken, its Turn does not exist yet
    lock_token: str | None = None  # the reply lock token of the reply in progress
    active: dict[str, Any] | None = None  # the active-reply record we keep refreshed
