"""What follows a finished reply, after its final event: memory of the exchange, the summary fold.

Neither may delay or break a conversation: the reply is stored and sent
before these run, and a failing memory write is logged, not raised.
"""

from __future__ import annotations

import structlog

from agents.runners import Pending
from agents.sessions import Remember, Session
from agents.summaries import ConversationSummaries
from agents.turns import TurnResult
from memory.hotstate import HotState

log = structlog.get_logger(__name__)


async def after_reply(
    session: Session,
    batch: list[Pending],
    message_id: str,
    result: TurnResult,
    *,
    remember: Remember | None,
    summaries: ConversationSummaries | None,
    fold_upto: str | None,
    hot: HotState,
    replica_id: str,
) -> None:
    """Remember a completed exchange; ask for the rolling summary's fold up to ``fold_upto``."""
    conv = session.conversation
    if remember is not None and result.status == "complete":
        turns = [{"id": p.message.id, "role": "user", "content": p.message.content} for p in batch]
        turns.append({"id": message_id, "role": "assistant", "content": result.text})
        try:
            await remember(session, turns)
        except Exception as exc:  # memory must never break a conversation
            log.warning("remember_failed", conversation_id=conv.id, error=repr(exc))
    if fold_upto is not None and summaries is not None:
        await summaries.request(
            hot,
            replica_id,
            tenant_id=conv.tenant_id,
            persona_id=conv.persona_id,
            user_id=conv.user_id,
            conversation_id=conv.id,
            upto=fold_upto,
            user_name=session.user.name or session.user.external_id,
            persona_name=session.persona.name,
        )
