"""Settings of the analysis part: environment variables with the ``SALON_ANALYSIS_`` prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AnalysisSettings(BaseSettings):
    """Per-message analysis and analytics (docs/analysis.md)."""

    model_config = SettingsConfigDict(env_prefix="SALON_ANALYSIS_", env_file=None, extra="ignore")

    enabled: bool = True
    # auto: transformers when a model folder below is set, else the lexicons.
    analyzer: Literal["auto", "lexicon", "transformers"] = "auto"
    sentiment_model: str | None = None
    emotion_model: str | None = None
    device: str = "cpu"
    # Comma-separated message roles to analyse.
    roles: str = "user,assistant"
    # Longer messages are analysed on their first max_chars characters.
    max_chars: int = Field(default=5000, ge=1)
    job_timeout_seconds: float = Field(default=60.0, gt=0)

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.roles.split(",") if r.strip())
