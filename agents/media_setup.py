"""Wiring media on demand into a server or a worker (docs/media.md).

:func:`install` is the extension hook (server/extensions.py): it builds the
:class:`MediaService` from ``SALON_MEDIA_*`` / ``SALON_IMAGE_*`` / ...,
registers the ``media.generate`` job and the "show me ..." rule. Workers call
:func:`build_media_service` and :func:`agents.media_jobs.register_media_jobs`
themselves (they take no messages, so no hook).
"""

from __future__ import annotations

from typing import Any

from agents.media import MediaError, MediaService, PromptVerdict
from agents.media_intent import intent_hook
from agents.media_jobs import register_media_jobs
from agents.sessions import ConversationHooks, ServiceParts
from media.media_config import MediaConfig
from memory.media_store import MediaStore

SECRET_NAME = "media_url_key"


async def build_media_service(
    store: Any,
    storage: Any,
    jobs: Any,
    events: Any,
    *,
    moderation: Any = None,
    config: MediaConfig | None = None,
) -> MediaService:
    """A media service on these parts; ``moderation`` (agents.moderation) checks prompts."""
    config = config or MediaConfig()
    secret = (await store.get_or_create_secret(SECRET_NAME)).encode()
    return MediaService(
        store,
        MediaStore(store),
        storage,
        jobs,
        events,
        config,
        secret=secret,
        check_prompt=_prompt_check(moderation) if moderation is not None else None,
        image_policy=moderation.image_action if moderation is not None else None,
        nsfw_score=_nsfw_score(config),
    )


async def install(
    parts: ServiceParts, hooks: ConversationHooks, *, moderation: Any = None
) -> MediaService:
    service = await build_media_service(
        parts.store, parts.storage, parts.jobs, parts.events, moderation=moderation
    )
    register_media_jobs(parts.jobs, service)
    if service.config.media_intents:
        hooks.after_message.append(intent_hook(service))
    return service


def _prompt_check(moderation: Any) -> Any:
    from agents.moderation.service import FlagContext

    async def check(
        tenant_id: str,
        text: str,
        persona_id: str | None,
        user_id: str | None,
        conversation_id: str | None,
    ) -> PromptVerdict:
        verdict = await moderation.check_text(
            tenant_id, text, FlagContext(persona_id, user_id, conversation_id)
        )
        return PromptVerdict(verdict.text, verdict.blocked, verdict.code, verdict.message)

    return check


def _nsfw_score(config: MediaConfig) -> Any:
    """The NSFW classifier (loaded on first use), or None when the check is off."""
    if not config.media_nsfw_check:
        return None
    checker: Any = None

    async def score(png: bytes) -> float:
        nonlocal checker
        try:
            if checker is None:
                from media.safety import create_safety_checker

                checker = create_safety_checker()
            return float(await checker.score(png))
        except (ImportError, RuntimeError) as exc:
            # Fail closed: an image that cannot be checked is not delivered.
            raise MediaError(
                "media_check_unavailable",
                f"generated images cannot be checked ({exc}); install 'salon[images]' "
                "or set SALON_MEDIA_NSFW_CHECK=false",
            ) from exc

    return score
