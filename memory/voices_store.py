"""Cloned voices and their consent records (docs/voice.md, "Voice cloning").

Placeholder: the tables and the store land with the cloning workflow.
"""

from __future__ import annotations
