"""Configuration from the environment (``SALON_`` prefix); CLI flags override.

Every field is documented in docs/configuration.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SALON_", env_file=None, extra="ignore")

    # -- where things live
    data_dir: Path = Path(".salon")
    database_url: str | None = None
    database_pool_size: int = 10
    redis_url: str | None = None
    redis_pool_size: int = 256
    media_dir: Path | None = None
    job_concurrency: int = 4

    # -- server
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # server processes (replicas) on this port; >1 needs Redis + Postgres
    log_level: str = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    graceful_shutdown_seconds: float = 10.0

    # -- auth
    bootstrap_key: SecretStr | None = None
    session_token_ttl_seconds: int = 900
    allowed_origins: Annotated[list[str], NoDecode] = []
    # -- operator console (docs/console.md)
    console_token_ttl_seconds: int = 12 * 3600
    console_active_minutes: int = 30  # a conversation is "active" this long after its last event
    console_login_attempts: int = 10  # per email (and per client address x 3) per 5 minutes

    # -- limits
    max_frame_bytes: int = 65_536
    messages_per_minute: int = 60
    user_messages_per_minute: int = 120
    max_message_chars: int = 8000
    max_connections: int = 10_000

    # -- long-term memory (docs/memory.md, docs/embeddings.md)
    memory_enabled: bool = True
    memory_recall_k: int = 6
    memory_recall_token_budget: int = 300
    # Postgres: a partial HNSW index per person with over 5,000 live memories (memory/owner_indexes.py).
    memory_owner_indexes: bool = True
    memory_owner_index_max: int = 500
    # Queue the memory.reembed job at start when items lack vectors of the configured embedder.
    memory_reembed: bool = True
    memory_summaries: bool = True  # rolling summaries of older history (agents/summaries.py)
    memory_summary_tokens: int = 400
    # Fact extraction: "auto" = the configured LLM when it supports structured
    # output (an OpenAI-compatible endpoint), else rules; "llm" or "rules" force one.
    memory_extractor: Literal["auto", "llm", "rules"] = "auto"
    embeddings_provider: str | None = None  # local (default), openai, or none
    embeddings_base_url: str | None = None
    embeddings_api_key: SecretStr | None = None
    embeddings_model: str | None = None
    embeddings_dimensions: int | None = None
    embeddings_timeout_seconds: float = 30.0

    # -- event log
    event_log_max_events: int = 5000
    event_log_ttl_seconds: float = 900.0
    reply_lock_ttl_seconds: float = 10.0

    # -- LLM
    llm_provider: str | None = None
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None
    llm_timeout_seconds: float = 30.0
    llm_max_retries: int = 1
    llm_max_tokens: int = 256
    llm_temperature: float = 0.7
    llm_preload: bool = True
    delta_coalesce_ms: float = 15.0

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        return value
