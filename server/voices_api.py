"""``/v1/voices``: cloned voices with consent records (docs/voice.md, "Voice cloning").

Placeholder: the routes land with the cloning workflow.
"""

from __future__ import annotations

from starlette.routing import Route

routes: list[Route] = []
