"""Analysis of stored messages, as a background job after each one (docs/analysis.md).

The ``after_message`` hook only enqueues an ``analysis.message`` job, so the
reply never waits for analysis; the job (in the server with the in-process
runner, in a ``salon worker`` with Redis) analyses the message, stores it with
its aggregates (memory/analysis_store.py) and appends ``message.analysis``
to the conversation's event log.

The job's arguments carry ``message_id`` and no ``conversation_id`` on
purpose: agents/jobs.py turns jobs with a ``conversation_id`` into
``media.*`` events, and an analysis is neither media nor a reason to show an
``error`` to the person when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import structlog

from agents.analysis.base import Analyzer
from agents.analysis.settings import AnalysisSettings
from agents.sessions import Session
from media.jobs.base import JobContext, JobFailed, JobRunner
from memory.analysis_store import AnalysisStore, MessageContext
from memory.eventlog import EventLog
from memory.records import AnalysisRecord, MessageRecord
from memory.store import Store

log = structlog.get_logger(__name__)

JOB_KIND = "analysis.message"
EVENT_TYPE = "message.analysis"


def job_id_for(message_id: str) -> str:
    """One job per message: a second enqueue while it is queued or running is a no-op."""
    return f"analysis.{message_id}"


class AnalysisService:
    """Runs the analyzer on stored messages and serves stored analyses and aggregates."""

    def __init__(
        self,
        store: Store,
        events: EventLog,
        analyzer: Analyzer,
        settings: AnalysisSettings | None = None,
        *,
        jobs: JobRunner | None = None,
    ) -> None:
        self.store = store
        self.events = events
        self.analyzer = analyzer
        self.settings = settings or AnalysisSettings()
        self.jobs = jobs
        self.analyses = AnalysisStore(store)
        self._warmup: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------

    def register(self, runner: JobRunner) -> None:
        """Register the ``analysis.message`` job on ``runner`` (servers and workers alike)."""
        runner.register(JOB_KIND, self.run_job, timeout=self.settings.job_timeout_seconds)

    def start_warmup(self) -> None:
        """Load the analyzer in a thread in the background, so the first job is not slow."""

        async def warm() -> None:
            try:
                await asyncio.to_thread(self.analyzer.start)
            except Exception as exc:  # each job then reports it
                log.warning("analyzer_warmup_failed", error=repr(exc))

        self._warmup = asyncio.create_task(warm(), name="analysis-warmup")

    async def close(self) -> None:
        if self._warmup is not None:
            self._warmup.cancel()
            with contextlib.suppress(BaseException):
                await self._warmup
        self.analyzer.close()

    # -- the hook and the job -------------------------------------------------

    async def after_message(self, session: Session, message: MessageRecord) -> None:
        """The ``after_message`` hook: schedule the analysis of a stored message."""
        if self.jobs is None or not self._wanted(message.role, message.content, message.status):
            return
        await self.jobs.enqueue(
            JOB_KIND,
            {"tenant_id": message.tenant_id, "message_id": message.id},
            job_id=job_id_for(message.id),
        )

    def _wanted(self, role: str, content: str, status: str) -> bool:
        # A cancelled or failed reply is a fragment of what the persona meant
        # to say: analysing it would skew the persona's aggregates.
        return status == "complete" and role in self.settings.role_set and bool(content.strip())

    async def run_job(self, ctx: JobContext, args: dict[str, Any]) -> dict[str, Any]:
        tenant_id, message_id = args.get("tenant_id"), args.get("message_id")
        if not isinstance(tenant_id, str) or not isinstance(message_id, str):
            raise JobFailed(f"{JOB_KIND} needs string 'tenant_id' and 'message_id'")
        record = await self.analyze_message(tenant_id, message_id)
        return {"message_id": message_id, "stored": record is not None}

    async def analyze_message(self, tenant_id: str, message_id: str) -> AnalysisRecord | None:
        """Analyse, store and announce one message; None if it is gone, skipped or
        was analysed before (each message is analysed and counted once)."""
        if await self.analyses.get(tenant_id, message_id) is not None:
            return None
        ctx = await self.analyses.message_context(tenant_id, message_id)
        if ctx is None or not self._wanted(ctx.role, ctx.content, ctx.status):
            return None  # deleted meanwhile (a forgotten user), or not analysed
        [analysis] = await self.analyzer.analyze_async([ctx.content[: self.settings.max_chars]])
        record = await self.analyses.save(
            ctx,
            sentiment=analysis.sentiment.as_dict(),
            emotions=analysis.emotions,
            language=analysis.language,
            analyzer=self.analyzer.label,
        )
        if record is not None:
            await self._announce(ctx, record)
        return record

    async def _announce(self, ctx: MessageContext, record: AnalysisRecord) -> None:
        """Append ``message.analysis`` to the conversation's log, keeping seq rising."""
        conv = await self.store.get_conversation(ctx.tenant_id, ctx.conversation_id)
        if conv is None:
            return
        # The hot log may have expired or restarted since the last event.
        await self.events.ensure_floor(conv.id, conv.last_seq)
        appended = await self.events.append(
            conv.id,
            {
                "type": EVENT_TYPE,
                "message_id": ctx.message_id,
                "role": ctx.role,
                "analysis": record.to_public(),
            },
        )
        await self.store.record_last_seq(ctx.tenant_id, conv.id, int(appended["seq"]))

    # -- reads ----------------------------------------------------------------

    async def attach(
        self, tenant_id: str, messages: Iterable[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Public message objects with their ``analysis`` (null until it is ready)."""
        items = list(messages)
        found = await self.analyses.get_many(tenant_id, [str(m["id"]) for m in items])
        return [
            {**m, "analysis": found[m["id"]].to_public() if m["id"] in found else None}
            for m in items
        ]
