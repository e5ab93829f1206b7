"""RSS and Atom feeds for personas: fetch, analyse, find trending topics (docs/feeds.md).

Installed into a server by :func:`install` (see server/extensions.py): it
registers the context hook that gives a persona the trending topics of the
feeds it follows, starts the background fetcher (``SALON_FEEDS_POLL``) and
returns the :class:`~integrations.rss.service.FeedService` that
server/feeds_api.py serves, or None when ``SALON_FEEDS_ENABLED`` is false.
"""

from __future__ import annotations

from typing import Any

from agents.sessions import ConversationHooks, ServiceParts


async def install(parts: ServiceParts, hooks: ConversationHooks, **others: Any) -> Any:
    """Register this part's hooks and jobs; return its service (None: not enabled).

    ``others`` (e.g. ``analysis``) are the other parts; feeds use none of them,
    so they work with or without agents/analysis.
    """
    from integrations.rss.settings import FeedSettings

    settings = FeedSettings()
    if not settings.enabled:
        return None
    # Imported here: feedparser, YAKE and VADER load only when feeds are on.
    from integrations.rss.service import FeedService
    from memory.feeds_store import FeedStore

    service = FeedService(FeedStore(parts.store), parts.hot, settings)
    hooks.context.append(service.context)
    service.start()
    return service
