"""moderation: installed into a server by :func:`install` (see server/extensions.py)."""

from __future__ import annotations

from typing import Any

from agents.sessions import ConversationHooks, ServiceParts


async def install(parts: ServiceParts, hooks: ConversationHooks, **others: Any) -> Any:
    """Register this part's hooks and jobs; return its service (None: not enabled)."""
    return None
