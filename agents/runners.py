"""What :class:`agents.conversations.ConversationService` keeps per conversation."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from agents.llm.base import GenerationParams
from agents.sessions import Session
from agents.turns import Turn
from agents.voice import OutputFormat
from memory.records import MessageRecord


@dataclass
class Pending:
    """A stored user message waiting for the reply that answers it."""

    message: MessageRecord
    params: GenerationParams | None = None
    instructions: str | None = None
    audio: OutputFormat | bool = False  # from an audio session: spoken, in this format
    accepted_seq: int = 0  # of its message.accepted: the reply's events come after it


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
