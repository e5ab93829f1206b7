"""Feeds configuration: environment variables with the ``SALON_FEEDS_`` prefix (docs/feeds.md)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class FeedSettings(BaseSettings):
    """Every field is documented in docs/feeds.md."""

    model_config = SettingsConfigDict(env_prefix="SALON_FEEDS_", env_file=None, extra="ignore")

    # The whole part: API, context hook and fetcher. Off: /v1/feeds answers 404.
    enabled: bool = True
    # The background fetcher. Off: feeds are fetched by POST /v1/feeds/{id}/refresh only
    # (tests turn it off so nothing fetches behind their back).
    poll: bool = True
    # Default time between two fetches of a feed, and the least a feed may ask for.
    interval_seconds: int = Field(default=900, ge=1)
    min_interval_seconds: int = Field(default=60, ge=1)
    # How often the fetcher looks for due feeds.
    tick_seconds: float = Field(default=30.0, gt=0)
    # At most this many fetches at once per replica.
    concurrency: int = Field(default=4, ge=1)
    # Failures back off exponentially: interval * 2**failures, at most this.
    max_backoff_seconds: int = Field(default=86_400, ge=1)

    # -- fetching user-given URLs safely
    # Loopback, private, link-local and other non-public addresses are refused
    # unless this is set (tests set it: their fixture feeds are on 127.0.0.1).
    allow_private: bool = False
    timeout_seconds: float = Field(default=15.0, gt=0)  # the whole fetch, body included
    max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)  # decoded body
    max_redirects: int = Field(default=5, ge=0)
    max_items_per_fetch: int = Field(default=200, ge=1)
    user_agent: str = "Salon-Feeds/0.1 (+https://github.com/salon; RSS reader for personas)"

    # -- topics
    window_hours: float = Field(default=24.0, gt=0)  # the "now" window
    baseline_windows: int = Field(default=7, ge=1)  # windows before it that make the baseline
    min_count: int = Field(default=2, ge=1)  # items in the window a topic needs
    min_ratio: float = Field(default=1.5, gt=0)  # smoothed rate vs the baseline's
    min_score: float = Field(default=1.0)  # z-score
    context_topics: int = Field(default=5, ge=0)  # topics given to the persona (0: none)
    cache_seconds: float = Field(default=30.0, ge=0)  # topics are recomputed at most this often
    keyphrases_per_item: int = Field(default=10, ge=1)

    # -- housekeeping
    retention_days: int = Field(default=30, ge=1)
    # A replica holds a feed's fetch lock this long (refreshed while it works).
    lock_ttl_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _floor_interval(self) -> FeedSettings:
        # A default below the floor would make every new feed invalid.
        if self.interval_seconds < self.min_interval_seconds:
            self.interval_seconds = self.min_interval_seconds
        return self
