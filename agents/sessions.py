"""What a conversation is made of, and the hooks other layers plug into it.

:class:`ConversationHooks` are the extension points of
:class:`agents.conversations.ConversationService`, so analysis, moderation
and feeds plug in without the conversation logic knowing them:

- ``after_message`` runs for every stored message (the person's, once
  accepted, and each reply, once stored); it is called in a background task
  and must not be relied on to finish before the reply;
- ``context`` gives extra blocks for the system prompt of the next reply
  (current topics, ...), read alongside recalled memories;
- ``moderation`` inspects the person's input before it is stored and the
  reply's output as it streams (agents/moderation).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from memory.records import ConversationRecord, MessageRecord, PersonaRecord, UserRecord


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
    # A replica refreshes its reply lock every lock_ttl/3; one that dies loses
    # it after lock_ttl and its reply is ended by another replica.
    lock_ttl_seconds: float = 10.0


# recall(session, query) -> memory texts for the prompt (may be empty)
Recall = Callable[[Session, str], Awaitable[list[str]]]
# remember(session, turns) -> schedules storing finished turns in long-term memory
Remember = Callable[[Session, list[dict[str, Any]]], Awaitable[None]]
# after_message(session, message) -> background work on a stored message
AfterMessage = Callable[[Session, MessageRecord], Awaitable[None]]
# context(session, query) -> extra system-prompt blocks for the next reply
Context = Callable[[Session, str], Awaitable[list[str]]]


@dataclass
class ServiceParts:
    """What an extension's ``install`` gets to work with (all already started)."""

    store: Any  # memory.store.Store
    events: Any  # memory.eventlog.EventLog
    hot: Any  # memory.hotstate.HotState
    jobs: Any  # media.jobs.JobRunner
    provider: Any  # agents.llm.base.LLMProvider
    storage: Any = None  # media.storage.MediaStorage


@dataclass
class ConversationHooks:
    after_message: list[AfterMessage] = field(default_factory=list)
    context: list[Context] = field(default_factory=list)
    moderation: Any = None  # agents.moderation's hook object, when configured
    # paused(conversation_id) -> True while an operator has taken the conversation
    # over (agents/takeover.py): messages are stored, the bot does not answer.
    paused: Callable[[str], Awaitable[bool]] | None = None
