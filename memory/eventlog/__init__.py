"""The per-conversation event log: the spine of delivery and resume."""

from memory.eventlog.base import EventLog, Lagged, ResumeGap, Subscription, follow
from memory.eventlog.inprocess import InProcessEventLog

__all__ = ["EventLog", "InProcessEventLog", "Lagged", "ResumeGap", "Subscription", "follow"]
