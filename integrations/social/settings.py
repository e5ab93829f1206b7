"""Comment automation settings (docs/integrations.md), from the environment.

The deployment-wide platform apps (``SALON_META_*``, ``SALON_X_*``,
``SALON_YOUTUBE_*``) and the pipeline's limits (``SALON_SOCIAL_*``). Tenants
may also register their own apps and accounts through the API; those live
in the database, credentials encrypted with ``SALON_SOCIAL_CREDENTIALS_KEY``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SocialSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SALON_", env_file=None, extra="ignore")

    social_enabled: bool = True

    # -- Meta (Instagram, Facebook Pages): webhooks and the Graph API
    meta_app_secret: SecretStr | None = None  # X-Hub-Signature-256 key
    meta_verify_token: SecretStr | None = None  # answers hub.verify_token
    meta_graph_url: str = "https://graph.facebook.com/v21.0"

    # -- X: Account Activity webhooks and the API
    x_consumer_secret: SecretStr | None = None  # CRC and x-twitter-webhooks-signature key
    x_api_url: str = "https://api.x.com"

    # -- YouTube: polled (no comment webhook exists)
    youtube_api_url: str = "https://www.googleapis.com/youtube/v3"
    youtube_poll: bool = True
    youtube_poll_seconds: float = Field(default=60.0, gt=0)
    youtube_daily_quota: int = Field(default=10_000, ge=1)  # units per day per project

    # -- the pipeline
    # A Fernet key (base64, 32 bytes) for the tenants' platform credentials at rest.
    # Unset: one is generated and kept in the database (readable by whoever reads the
    # database: set it in production, from a secret store).
    social_credentials_key: SecretStr | None = None
    social_dedupe_hours: float = Field(default=72.0, gt=0)  # deliveries/comments remembered
    social_max_skew_seconds: float = Field(default=300.0, gt=0)  # signed timestamps older: replays
    social_reply_attempts: int = Field(default=5, ge=1)
    social_retry_base_seconds: float = Field(default=5.0, gt=0)  # doubles per attempt, max 1 h
    social_sweep_seconds: float = Field(default=5.0, gt=0)  # how often due retries are started
    social_request_timeout_seconds: float = Field(default=20.0, gt=0)
