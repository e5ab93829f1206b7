"""What a reply's prompt reads besides history: recalled memories and context blocks.

Both are hooks (agents/sessions.py) that may be slow or fail; neither may
break or stall a reply.
"""

from __future__ import annotations

import asyncio

import structlog

from agents.sessions import ConversationHooks, Recall, Session

log = structlog.get_logger(__name__)

# A context hook (current topics, ...) that takes longer adds nothing to the reply.
CONTEXT_TIMEOUT = 1.0


async def recalled_memories(
    recall: Recall | None, hooks: ConversationHooks, session: Session, query: str
) -> list[str]:
    """Recalled memories for the prompt; moderation drops those that read like instructions."""
    if recall is None:
        return []
    memories = await recall(session, query)
    if hooks.moderation is not None:
        memories = await hooks.moderation.filter_memories(session, memories)
    return memories


async def context_blocks(hooks: ConversationHooks, session: Session, query: str) -> list[str]:
    """Extra system-prompt blocks from the context hooks; one that fails adds nothing."""
    blocks: list[str] = []
    for hook in hooks.context:
        try:
            blocks.extend(await asyncio.wait_for(hook(session, query), CONTEXT_TIMEOUT))
        except Exception as exc:
            log.warning("context_hook_failed", error=repr(exc))
    return blocks
