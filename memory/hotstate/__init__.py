"""Hot state shared by replicas: locks, rate counters, presence, small records, control messages."""

from memory.hotstate.base import HotState
from memory.hotstate.inprocess import InProcessHotState

__all__ = ["HotState", "InProcessHotState"]
