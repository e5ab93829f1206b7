"""The optional parts that plug into conversations: analysis, moderation, feeds, media, social.

Each lives in its own package with an ``install(parts, hooks)`` that registers
its :class:`agents.sessions.ConversationHooks` and jobs and returns its
service (or None when disabled by its settings); its HTTP routes live in
server/analytics_api.py, server/moderation_api.py and server/feeds_api.py and
find the service on ``AppState.extensions``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from agents.sessions import ConversationHooks, ServiceParts


@dataclass
class Extensions:
    analysis: Any = None
    moderation: Any = None
    feeds: Any = None
    media: Any = None
    social: Any = None
    takeover: Any = None  # agents.takeover.TakeoverService (always on)

    async def close(self) -> None:
        for part in (self.social, self.media, self.feeds, self.moderation, self.analysis):
            close = getattr(part, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()


async def install_extensions(parts: ServiceParts, hooks: ConversationHooks) -> Extensions:
    from agents.analysis import install as install_analysis
    from agents.media_setup import install as install_media
    from agents.moderation import install as install_moderation
    from integrations.rss import install as install_feeds
    from integrations.social import install as install_social

    ext = Extensions()
    ext.analysis = await install_analysis(parts, hooks)
    ext.moderation = await install_moderation(parts, hooks)
    ext.feeds = await install_feeds(parts, hooks, analysis=ext.analysis)
    ext.media = await install_media(parts, hooks, moderation=ext.moderation)
    ext.social = await install_social(parts, hooks, moderation=ext.moderation)
    return ext
