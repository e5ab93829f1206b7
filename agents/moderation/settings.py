"""Process-wide moderation settings (``SALON_MODERATION_`` prefix).

Per-tenant choices live in the tenant's policy (policy.py); these say whether
moderation runs at all and which toxicity classifier is reachable.
"""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModerationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SALON_MODERATION_", env_file=None, extra="ignore")

    # Off: no hook is installed, replies and input cost nothing extra.
    enabled: bool = True
    # An OpenAI-compatible ``POST /v1/moderations`` endpoint (OpenAI, or any
    # server speaking that format). Unset: no toxicity check unless ``model``
    # names a chat model to ask instead (``classifier=llm``).
    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = None  # endpoint: e.g. "omni-moderation-latest"
    # "endpoint": the moderations API at base_url; "llm": the configured chat
    # LLM classifies (structured output); "auto": endpoint when base_url is set.
    classifier: Literal["auto", "endpoint", "llm", "none"] = "auto"
    timeout_seconds: float = 2.0
    # How long a replica keeps a tenant's policy before reading it again; a
    # PUT on this replica takes effect at once, on others within this time.
    policy_cache_seconds: float = 5.0
