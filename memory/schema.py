"""The whole schema: every module that declares tables on :class:`memory.models.Base`.

Most tables live in memory/models.py; the optional parts keep theirs beside
their store (moderation, feeds). Code that needs every table (Alembic's
metadata, the schema-vs-migrations test) imports ``metadata`` from here.
"""

from __future__ import annotations

import memory.console_store
import memory.feeds_store
import memory.media_store
import memory.moderation_store
import memory.social_store
import memory.takeovers_store
import memory.voices_store
from memory.models import Base

metadata = Base.metadata

__all__ = ["metadata"]

# Imported for their table declarations.
_TABLE_MODULES = (
    memory.console_store,
    memory.feeds_store,
    memory.media_store,
    memory.moderation_store,
    memory.social_store,
    memory.takeovers_store,
    memory.voices_store,
)
