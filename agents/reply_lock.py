"""Keeping a conversation's reply lock while a reply is generated.

:class:`agents.conversations.ConversationService` takes the lock before a
reply (one reply per conversation across replicas); these helpers refresh it,
keep the active-reply record alive for other replicas, apply cancels that
arrive through the hot state, and stop the reply if the lock was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from agents.recovery import active_key
from agents.voice import played_seconds
from memory.hotstate import HotState

log = structlog.get_logger(__name__)

# The active-reply record outlives a dead owner's lock by this factor, so other
# replicas can still find and end the reply, but not forever.
ACTIVE_TTL_FACTOR = 6


async def owns(hot: HotState, lock: str, token: str, ttl: float) -> bool:
    """Still ours? (Unknown because the hot state is down counts as ours.)"""
    try:
        return await hot.refresh_lock(lock, token, ttl)
    except Exception:
        return True


async def keep_lock(hot: HotState, runner: Any, lock: str, token: str, ttl: float) -> None:
    """Refresh the lock and the active record; stop the reply if the lock was lost.

    ``runner`` is the conversation's runner (``session``, ``active``, ``turn``).
    """
    conv_id = runner.session.conversation.id
    while True:
        await asyncio.sleep(ttl / 3)
        try:
            owned = await hot.refresh_lock(lock, token, ttl)
            if owned and runner.active is not None:
                await hot.put(
                    active_key(conv_id), runner.active, ttl_seconds=ACTIVE_TTL_FACTOR * ttl
                )
            cancel = await hot.get(f"cancel:{conv_id}") if owned else None
        except Exception as exc:
            log.warning("reply_lock_refresh_failed", lock=lock, error=repr(exc))
            continue
        turn = runner.turn
        if not owned:
            # Another replica may already have ended this reply as interrupted:
            # stop, and finish() will neither store nor emit anything.
            log.warning("reply_lock_lost", lock=lock)
            if turn is not None:
                turn.cancel("lock_lost")
            return
        if (
            cancel is not None
            and turn is not None
            and cancel.get("response_id") == turn.response_id
        ):
            turn.cancel(
                str(cancel.get("reason") or "cancelled"),
                played_seconds=played_seconds(cancel.get("played_ms")),
            )
            with contextlib.suppress(Exception):
                await hot.delete(f"cancel:{conv_id}")
