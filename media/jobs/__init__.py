"""Background jobs: a runner base, in-process (embedded) and SAQ/Redis implementations."""

from media.jobs.base import (
    Handler,
    InvalidJob,
    JobContext,
    JobError,
    JobFailed,
    JobRunner,
    JobRunnerUnavailable,
    JobState,
    JobStatus,
    OnEvent,
    UnknownJobKind,
)
from media.jobs.inprocess import InProcessJobRunner
from media.jobs.registry import create_job_runner

__all__ = [
    "Handler",
    "InProcessJobRunner",
    "InvalidJob",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobRunner",
    "JobRunnerUnavailable",
    "JobState",
    "JobStatus",
    "OnEvent",
    "UnknownJobKind",
    "create_job_runner",
]
