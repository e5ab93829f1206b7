"""Time-ordered, prefixed identifiers (``msg_0190f3...``).

The prefix says what an id names in logs and URLs; the leading 48-bit
millisecond timestamp keeps ids roughly sortable by creation time, which is
what history paging relies on as a tie-breaker.
"""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    """Return ``prefix_`` + 12 hex digits of milliseconds + 16 random hex digits."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"
