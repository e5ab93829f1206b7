"""The per-conversation event log: the spine of delivery and resume."""

from memory.eventlog.base import (
    AppendWindow,
    EventLog,
    Lagged,
    LoggedEvent,
    ResumeGap,
    Subscription,
    event_text,
    follow,
    follow_batches,
)
from memory.eventlog.inprocess import InProcessEventLog

__all__ = [
    "AppendWindow",
    "EventLog",
    "InProcessEventLog",
    "Lagged",
    "LoggedEvent",
    "ResumeGap",
    "Subscription",
    "event_text",
    "follow",
    "follow_batches",
]
