"""Choose the job runner from configuration: in-process unless a Redis URL is given."""

from __future__ import annotations

from typing import Any

from media.jobs.base import JobRunner, OnEvent


def create_job_runner(
    redis_url: str | None,
    *,
    on_event: OnEvent | None = None,
    concurrency: int = 4,
    **options: Any,
) -> JobRunner:
    """``None`` → :class:`InProcessJobRunner`; ``redis://...`` → :class:`SaqJobRunner`.

    ``options`` go to the implementation (``timeout``, ``grace_seconds``; for Redis also
    ``queue_name``, ``result_ttl``, ``retries``, ``serve_concurrency``).
    """
    if not redis_url:
        from media.jobs.inprocess import InProcessJobRunner

        return InProcessJobRunner(on_event=on_event, concurrency=concurrency, **options)
    from media.jobs.saq_runner import SaqJobRunner

    return SaqJobRunner(redis_url, on_event=on_event, concurrency=concurrency, **options)
