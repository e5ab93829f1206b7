"""HTTP routes of the moderation part (see server/extensions.py)."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
