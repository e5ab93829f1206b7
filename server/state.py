"""Everything the app holds for its lifetime, built from Settings."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from typing import Any

import structlog

from agents.conversations import ConversationService, Recall, Remember, Session, TurnSettings
from agents.extraction import FactExtractor, RuleExtractor
from agents.extraction_llm import LLMExtractor
from agents.jobs import job_event_hook, register_conversation_jobs
from agents.llm.base import LLMProvider
from agents.llm.registry import create_provider
from agents.memory import MemoryService, MemorySettings, build_embedder, register_memory_jobs
from agents.ops_feed import activity_hook
from agents.reembed import prepare_embedding_space, queue_reembed_if_stale
from agents.sessions import ConversationHooks, ServiceParts
from agents.summaries import (
    ConversationSummaries,
    SummaryService,
    SummarySettings,
    register_summary_jobs,
)
from agents.takeover import TakeoverService
from media.jobs import JobRunner, create_job_runner
from media.media_config import MediaConfig
from media.storage import MediaStorage, create_media_storage
from media.voice_config import secret as secret_value
from memory.db import create_engine, normalize_database_url
from memory.embeddings.base import Embedder
from memory.eventlog import EventLog, InProcessEventLog
from memory.hotstate import HotState, InProcessHotState
from memory.memories import MemoryStore
from memory.migrate import migrate
from memory.store import Conflict, Store
from memory.takeovers_store import TakeoverStore
from server.auth import SessionTokens
from server.config import Settings
from server.extensions import Extensions, install_extensions

log = structlog.get_logger(__name__)

DEFAULT_TENANT_ID = "ten_default"


@dataclass
class AppState:
    settings: Settings
    store: Store
    events: EventLog
    provider: LLMProvider
    service: ConversationService
    tokens: SessionTokens
    hot: HotState
    jobs: JobRunner
    storage: MediaStorage
    memory: MemoryService | None = None
    extensions: Extensions = field(default_factory=Extensions)
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    connections: set[object] = field(default_factory=set)
    console: Any = None  # server.console_auth.ConsoleAuth: console sign-in and tokens


def build_provider(settings: Settings) -> LLMProvider:
    """The configured LLM provider (not started)."""
    return create_provider(
        provider=settings.llm_provider,
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
        model=settings.llm_model,
        timeout=settings.llm_timeout_seconds,
        max_retries=settings.llm_max_retries,
        data_dir=settings.data_dir,
    )


def redis_for(settings: Settings) -> Any:
    """A Redis client for ``SALON_REDIS_URL``, with the configured pool size."""
    from memory.redis_client import create_redis

    assert settings.redis_url is not None
    return create_redis(settings.redis_url, pool_size=settings.redis_pool_size)


def build_event_log(settings: Settings, redis: Any = None) -> EventLog:
    """The Redis event log when ``SALON_REDIS_URL`` is set, else the in-process one."""
    if settings.redis_url:
        from memory.eventlog.redis import RedisEventLog

        return RedisEventLog(
            redis if redis is not None else redis_for(settings),
            max_events=settings.event_log_max_events,
            ttl_seconds=settings.event_log_ttl_seconds,
        )
    return InProcessEventLog(
        max_events=settings.event_log_max_events, ttl_seconds=settings.event_log_ttl_seconds
    )


def build_hot_state(settings: Settings, redis: Any = None) -> HotState:
    if settings.redis_url:
        from memory.hotstate.redis import RedisHotState

        return RedisHotState(redis if redis is not None else redis_for(settings))
    return InProcessHotState()


async def build_state(settings: Settings, *, provider: LLMProvider | None = None) -> AppState:
    """Connect stores, apply migrations, bootstrap the first tenant, start the LLM provider."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    background: list[asyncio.Task[Any]] = []
    url = normalize_database_url(settings.database_url, settings.data_dir)
    store = Store(create_engine(url, pool_size=settings.database_pool_size))
    await migrate(store.engine)
    await bootstrap_tenant(store, settings)
    tokens = SessionTokens(await store.get_or_create_secret("session_token_key"))
    redis = redis_for(settings) if settings.redis_url else None
    events = build_event_log(settings, redis)
    hot = build_hot_state(settings, redis)
    if isinstance(events, InProcessEventLog):
        loaded = events.load(settings.data_dir / "eventlog.jsonl")
        if loaded:
            log.info("event_log_restored", events=loaded)
    if provider is None:
        provider = build_provider(settings)
    if settings.llm_preload:
        await provider.start()
    storage = build_storage(settings)
    jobs = create_job_runner(
        settings.redis_url,
        on_event=job_event_hook(events, store),
        concurrency=settings.job_concurrency,
        grace_seconds=settings.graceful_shutdown_seconds,
    )
    register_conversation_jobs(jobs, store, events, storage)
    memory = build_memory(settings, store, provider)
    recall = remember = None
    summaries = None
    if memory is not None:
        # A configured embedder of another size than the table's: the table adopts it.
        await prepare_embedding_space(memory.memories, memory.embedder)
        register_memory_jobs(jobs, memory)
        recall, remember = memory_hooks(memory, jobs)
        summary_service = build_summaries(settings, store, memory, provider)
        register_summary_jobs(jobs, summary_service)
        summaries = ConversationSummaries(summary_service, jobs.enqueue)
    takeover = TakeoverService(store, TakeoverStore(store), events, hot)
    hooks = ConversationHooks(paused=takeover.paused)
    # First, so the console's live list hears of a message before slower hooks run.
    hooks.after_message.append(activity_hook(events))
    extensions = await install_extensions(
        ServiceParts(store, events, hot, jobs, provider, storage), hooks
    )
    service = ConversationService(
        store,
        events,
        provider,
        TurnSettings(
            max_reply_tokens=settings.llm_max_tokens,
            temperature=settings.llm_temperature,
            coalesce_seconds=settings.delta_coalesce_ms / 1000,
            max_message_chars=settings.max_message_chars,
            lock_ttl_seconds=settings.reply_lock_ttl_seconds,
        ),
        hot=hot,
        recall=recall,
        remember=remember,
        summaries=summaries,
        hooks=hooks,
    )
    await service.start()
    if extensions.social is not None:  # comment replies go through conversations
        extensions.social.conversations = service
    takeover.conversations = service  # a takeover cancels the reply in flight
    extensions.takeover = takeover
    await jobs.start()
    if memory is not None and memory.embedder is not None:
        # Warm the embedder in the background: a cold first recall would wait ~10 s.
        background.append(asyncio.create_task(memory.embedder.start(), name="embedder-warmup"))
        if settings.memory_reembed:
            background.append(
                asyncio.create_task(
                    _queue_reembed(jobs, memory.memories, memory.embedder), name="reembed-check"
                )
            )
    from server.console_auth import ConsoleAuth

    console = ConsoleAuth(
        store,
        await store.get_or_create_secret("console_token_key"),
        ttl_seconds=settings.console_token_ttl_seconds,
    )
    return AppState(
        settings,
        store,
        events,
        provider,
        service,
        tokens,
        hot,
        jobs,
        storage,
        memory,
        extensions,
        background,
        console=console,
    )


async def _queue_reembed(jobs: JobRunner, memories: MemoryStore, embedder: Embedder) -> None:
    """Items without a vector of the configured embedder get one from a job (agents/reembed.py)."""
    try:
        if await queue_reembed_if_stale(jobs, memories, embedder):
            log.info("memory_reembed_queued", model=embedder.model, dimensions=embedder.dimensions)
    except Exception:
        log.exception("memory_reembed_check_failed")


async def maintenance_loop(state: AppState, interval: float = 30.0) -> None:
    """Periodic housekeeping: refresh presence, drop expired events of idle conversations."""
    while True:
        await asyncio.sleep(interval)
        for conn in list(state.connections):
            try:
                await conn.refresh_presence()  # type: ignore[attr-defined]
            except Exception as exc:  # housekeeping must never take the server down
                log.warning("presence_refresh_failed", error=repr(exc))
                break
        if isinstance(state.events, InProcessEventLog):
            try:
                state.events.sweep()
            except Exception:
                log.exception("event_log_sweep_failed")


def build_memory(
    settings: Settings, store: Store, provider: LLMProvider | None = None
) -> MemoryService | None:
    """Long-term memory; facts are extracted with ``provider`` when it can (see
    ``memory_extractor``), else by rules."""
    if not settings.memory_enabled:
        return None
    return MemoryService(
        MemoryStore(
            store,
            owner_indexes=settings.memory_owner_indexes,
            owner_index_max=settings.memory_owner_index_max,
        ),
        configured_embedder(settings),
        MemorySettings(
            recall_k=settings.memory_recall_k,
            recall_token_budget=settings.memory_recall_token_budget,
        ),
        extractor=build_extractor(settings, provider),
    )


def build_storage(settings: Settings) -> MediaStorage:
    """Where media files go: ``SALON_MEDIA_STORAGE`` (local files or S3)."""
    config = MediaConfig()
    return create_media_storage(
        config.media_storage,
        root=settings.media_dir or settings.data_dir / "media",
        bucket=config.media_s3_bucket,
        prefix=config.media_s3_prefix,
        endpoint_url=config.media_s3_endpoint_url,
        region=config.media_s3_region,
        access_key_id=secret_value(config.media_s3_access_key_id),
        secret_access_key=secret_value(config.media_s3_secret_access_key),
    )


def configured_embedder(settings: Settings) -> Embedder | None:
    """The ``SALON_EMBEDDINGS_*`` embedder (not loaded yet); None for keyword-only recall."""
    return build_embedder(
        provider=settings.embeddings_provider,
        base_url=settings.embeddings_base_url,
        api_key=settings.embeddings_api_key.get_secret_value()
        if settings.embeddings_api_key
        else None,
        model=settings.embeddings_model,
        dimensions=settings.embeddings_dimensions,
        timeout=settings.embeddings_timeout_seconds,
    )


def build_extractor(settings: Settings, provider: LLMProvider | None) -> FactExtractor:
    """The LLM extractor when asked for, or ("auto") when the provider has structured output."""
    mode = settings.memory_extractor
    capable = provider is not None and provider.capabilities.structured_output
    if provider is not None and (mode == "llm" or (mode == "auto" and capable)):
        return LLMExtractor(provider, timeout_seconds=settings.llm_timeout_seconds)
    return RuleExtractor()


def build_summaries(
    settings: Settings, store: Store, memory: MemoryService, provider: LLMProvider | None
) -> SummaryService:
    """Rolling summaries, written with ``provider`` (None or the embedded model: extractive)."""
    return SummaryService(
        store,
        memory.memories,
        provider,
        SummarySettings(
            enabled=settings.memory_summaries, max_tokens=settings.memory_summary_tokens
        ),
        embedder=memory.embedder,
    )


def memory_hooks(memory: MemoryService, jobs: JobRunner) -> tuple[Recall, Remember]:
    """Recall inside the reply path; remembering as a job after it."""

    async def recall(session: Session, query: str) -> list[str]:
        conv = session.conversation
        return await memory.recall(conv.tenant_id, conv.persona_id, conv.user_id, query)

    async def remember(session: Session, turns: list[dict[str, Any]]) -> None:
        conv = session.conversation
        await jobs.enqueue(
            "memory.remember",
            {
                "tenant_id": conv.tenant_id,
                "persona_id": conv.persona_id,
                "user_id": conv.user_id,
                "user_name": session.user.name or session.user.external_id,
                "persona_name": session.persona.name,
                "turns": turns,
            },
        )

    return recall, remember


async def close_state(state: AppState) -> None:
    for task in state.background:
        task.cancel()
    await state.service.shutdown(timeout=state.settings.graceful_shutdown_seconds)
    await state.jobs.close()  # before the services its jobs use
    await state.extensions.close()
    if isinstance(state.events, InProcessEventLog):
        saved = state.events.save(state.settings.data_dir / "eventlog.jsonl")
        log.info("event_log_saved", events=saved)
    await state.events.close()
    await state.hot.close()
    await state.provider.close()
    await state.storage.close()
    await state.store.close()


async def bootstrap_tenant(store: Store, settings: Settings) -> None:
    """On an empty database create the default tenant and its admin key (printed once)."""
    if await store.count_tenants() > 0:
        return
    try:  # a fixed id: replicas racing on their first start create only one
        await store.create_tenant("default", tenant_id=DEFAULT_TENANT_ID)
    except Conflict:
        return
    given = settings.bootstrap_key.get_secret_value() if settings.bootstrap_key else None
    _, key = await store.create_api_key(DEFAULT_TENANT_ID, "bootstrap admin", key=given)
    if given is None:
        # Printed once, to the terminal only; it is never written to the logs.
        print(
            f"\nsalon: created tenant 'default'. Its admin API key (shown once):\n\n    {key}\n",
            file=sys.stderr,
            flush=True,
        )
    log.info("tenant_bootstrapped", tenant_id=DEFAULT_TENANT_ID)
