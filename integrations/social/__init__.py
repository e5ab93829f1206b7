"""Comment automation: personas answer comments on Instagram, Facebook, X and YouTube.

Platform modules (meta.py, x.py, youtube.py) implement the bases of base.py;
service.py is the pipeline, policy.py the reply policies, crypto.py keeps
credentials encrypted at rest. :func:`install` wires it into a server
(server/extensions.py); the routes are server/webhooks_api.py and
server/social_api.py. docs/integrations.md.
"""

from __future__ import annotations

from typing import Any

from agents.sessions import ConversationHooks, ServiceParts


def build_platforms(settings: Any) -> Any:
    """Every platform module, configured (their HTTP clients open on first use)."""
    from integrations.social.meta import MetaReplyClient, MetaWebhook
    from integrations.social.service import Platforms
    from integrations.social.x import XReplyClient, XWebhook
    from integrations.social.youtube import YouTubePoller, YouTubeReplyClient

    timeout = settings.social_request_timeout_seconds
    meta = MetaReplyClient.from_settings(settings)  # one client for Instagram and Pages
    youtube_url = settings.youtube_api_url
    return Platforms(
        receivers={"meta": MetaWebhook(), "x": XWebhook.from_settings(settings)},
        repliers={
            "instagram": meta,
            "facebook": meta,
            "x": XReplyClient.from_settings(settings),
            "youtube": YouTubeReplyClient(youtube_url, timeout=timeout),
        },
        pollers={"youtube": YouTubePoller(youtube_url, timeout=timeout)},
    )


async def install(parts: ServiceParts, hooks: ConversationHooks, *, moderation: Any = None) -> Any:
    """The comment service (None: ``SALON_SOCIAL_ENABLED=false``); polling and retries start."""
    from integrations.social.crypto import Vault
    from integrations.social.service import CommentService
    from integrations.social.settings import SocialSettings
    from memory.social_store import SocialStore

    settings = SocialSettings()
    if not settings.social_enabled:
        return None
    key = (
        settings.social_credentials_key.get_secret_value()
        if settings.social_credentials_key
        else await parts.store.get_or_create_secret("social_credentials_key")
    )
    service = CommentService(
        SocialStore(parts.store),
        parts.store,
        parts.events,
        settings,
        Vault(key),
        build_platforms(settings),
        moderation=moderation,
        hot=parts.hot,
    )
    service.start(poll=settings.youtube_poll, sweep_seconds=settings.social_sweep_seconds)
    return service
