"""Analysis: sentiment, Plutchik emotions and language of every stored message.

:func:`install` (called by server/extensions.py) registers the
``analysis.message`` job and the ``after_message`` hook that enqueues it, and
returns the :class:`AnalysisService` the HTTP routes use (None when
``SALON_ANALYSIS_ENABLED=false``). A ``salon worker`` registers the same job
with :func:`register_analysis_jobs`. See docs/analysis.md.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agents.analysis.base import EMOTIONS, Analysis, Analyzer, AnalyzerError, Sentiment
from agents.analysis.registry import create_analyzer
from agents.analysis.service import EVENT_TYPE, JOB_KIND, AnalysisService
from agents.analysis.settings import AnalysisSettings
from agents.sessions import ConversationHooks, ServiceParts
from media.jobs.base import JobRunner
from memory.eventlog import EventLog
from memory.store import Store

__all__ = [
    "EMOTIONS",
    "EVENT_TYPE",
    "JOB_KIND",
    "Analysis",
    "AnalysisService",
    "AnalysisSettings",
    "Analyzer",
    "AnalyzerError",
    "Sentiment",
    "build_service",
    "install",
    "register_analysis_jobs",
]


def build_service(
    store: Store,
    events: EventLog,
    settings: AnalysisSettings | None = None,
    *,
    jobs: JobRunner | None = None,
    analyzer: Analyzer | None = None,
) -> AnalysisService | None:
    """The analysis service for these settings (read from the environment when None);
    None when disabled. A misconfigured analyzer raises :class:`AnalyzerError` here."""
    settings = settings or AnalysisSettings()
    if not settings.enabled:
        return None
    analyzer = analyzer or create_analyzer(settings)
    analyzer.check()
    return AnalysisService(store, events, analyzer, settings, jobs=jobs)


def register_analysis_jobs(
    runner: JobRunner,
    store: Store,
    events: EventLog,
    settings: AnalysisSettings | None = None,
) -> AnalysisService | None:
    """Register the ``analysis.message`` job on a worker's runner; None when disabled."""
    service = build_service(store, events, settings, jobs=runner)
    if service is not None:
        service.register(runner)
        service.start_warmup()
    return service


async def install(parts: ServiceParts, hooks: ConversationHooks, **others: Any) -> Any:
    """Register this part's hooks and jobs; return its service (None: not enabled)."""
    service = build_service(parts.store, parts.events, jobs=parts.jobs)
    if service is None:
        return None
    service.register(parts.jobs)
    hooks.after_message.append(service.after_message)
    # Loaded before the server is ready (~0.7 s for the lexicons), so the first
    # message's analysis is as quick as the others (and a bad model fails now).
    await asyncio.to_thread(service.analyzer.start)
    return service
