"""OpenAI-compatible audio routes: speech synthesis and transcription (docs/voice.md)."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
