"""Moderation of input, output and recalled memories, per tenant policy.

Installed into a server by :func:`install` (see server/extensions.py), which
sets ``hooks.moderation`` to a :class:`ModerationService`. Checks: PII
(pii.py), profanity (profanity.py), prompt injection (injection.py) and
toxicity through a configured classifier (toxicity.py); a reply is filtered
while it streams (stream.py). docs/moderation.md is the user's guide.
"""

from __future__ import annotations

from typing import Any

import structlog

from agents.sessions import ConversationHooks, ServiceParts

log = structlog.get_logger(__name__)


async def install(parts: ServiceParts, hooks: ConversationHooks, **others: Any) -> Any:
    """Register the moderation hook; return the service (None: ``SALON_MODERATION_ENABLED=false``)."""
    from agents.moderation.service import ModerationService
    from agents.moderation.settings import ModerationSettings
    from memory.moderation_store import ModerationStore

    settings = ModerationSettings()
    if not settings.enabled:
        return None
    service = ModerationService(
        ModerationStore(parts.store),
        parts.events,
        classifier=build_classifier(settings, parts.provider),
        policy_cache_seconds=settings.policy_cache_seconds,
    )
    hooks.moderation = service
    return service


def build_classifier(settings: Any, provider: Any) -> Any:
    """The configured toxicity classifier, or None (the default: no toxicity check)."""
    from agents.moderation.toxicity import EndpointClassifier, LLMClassifier

    mode = settings.classifier
    if mode == "auto":
        mode = "endpoint" if settings.base_url else "none"
    if mode == "endpoint":
        if not settings.base_url:
            raise RuntimeError(
                "SALON_MODERATION_CLASSIFIER=endpoint needs SALON_MODERATION_BASE_URL"
            )
        key = settings.api_key.get_secret_value() if settings.api_key else None
        log.info("moderation_classifier", kind="endpoint", model=settings.model)
        return EndpointClassifier(settings.base_url, key, settings.model, settings.timeout_seconds)
    if mode == "llm":
        if provider is None:
            raise RuntimeError("SALON_MODERATION_CLASSIFIER=llm needs a chat LLM provider")
        log.info("moderation_classifier", kind="llm")
        return LLMClassifier(provider, settings.timeout_seconds)
    return None
