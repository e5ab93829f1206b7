"""The Starlette application: routes, middleware, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from agents.llm.base import LLMProvider
from agents.voice import ReplyVoice
from media.tts.base import VoiceSettings
from server import (
    analytics_api,
    audio_api,
    console_api,
    feeds_api,
    http_api,
    jobs_api,
    media_api,
    memories_api,
    moderation_api,
    openai_api,
    social_api,
    takeover_api,
    users_api,
    voices_api,
    webhooks_api,
)
from server.config import Settings
from server.console_static import console_routes
from server.docs_api import docs_routes
from server.http_util import HTTPError, error_response
from server.logging import AccessLogMiddleware
from server.ops_ws import ops_endpoint
from server.state import build_state, close_state, maintenance_loop
from server.ws import websocket_endpoint

log = structlog.get_logger(__name__)

# The collector's thresholds while serving (CPython's default is 700, 10, 10).
# A young collection runs whenever tracked objects allocated minus freed pass
# the first number; a streaming server keeps thousands alive for a moment (the
# events in flight, their futures and frames), so at 700 it collected over a
# thousand times a minute at full load, each older-generation pass up to 30 ms,
# and the time went to collecting objects that were about to be freed anyway.
# At 20,000 a collection is rare; cyclic garbage waits for at most that many
# objects. Each young pass still costs 7-30 ms of CPU on a loaded server (it
# touches every referent of every young object, cache-cold on a large heap), so
# the hot paths avoid leaving tracked objects alive (memory/eventlog/inprocess.py);
# at 5,000 the passes were no shorter and cost more in total. Measured in
# docs/benchmarks.md ("Serving", the collector and in-process log rows).
GC_THRESHOLDS = (20_000, 10, 10)


def tune_collector() -> None:
    """Set the garbage collector up for serving, once startup is done."""
    # What startup built lives as long as the process: out of the collector's
    # sight, full collections stay short (they pause every socket's events).
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return error_response(exc.status, exc.code, exc.message)


async def _is_unavailable(request: Request, exc: BaseException) -> bool:
    """Is a store unreachable right now (retry later) rather than this a bug (500)?"""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        return True
    if type(exc).__module__.startswith("redis."):
        return "Connection" in type(exc).__name__ or "Timeout" in type(exc).__name__
    # asyncpg's own errors come from the per-message path (memory/pg_direct.py).
    if isinstance(exc, DBAPIError) or type(exc).__module__.startswith("asyncpg"):
        # Driver errors look alike; ask the database itself.
        try:
            await request.app.state.salon.store.ping()
        except Exception:
            return True
    return False


async def _unhandled(request: Request, exc: Exception) -> Response:
    if await _is_unavailable(request, exc):
        log.warning("store_unavailable", path=request.url.path, error=repr(exc))
        return JSONResponse(
            {"error": {"code": "unavailable", "message": "a store is unreachable; retry shortly"}},
            503,
            headers={"Retry-After": "2"},
        )
    log.exception("unhandled_error", path=request.url.path)
    return JSONResponse(
        {"error": {"code": "internal_error", "message": "internal server error"}}, 500
    )


def create_app(
    settings: Settings | None = None, *, provider: LLMProvider | None = None
) -> Starlette:
    """Build the app; stores connect and migrate in the lifespan, not at import."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = await build_state(settings, provider=provider)
        app.state.salon = state
        voice = audio_api.voice_services(app)
        await voice.start()  # loads models only with SALON_VOICE_PRELOAD
        # Replies to audio sessions are spoken with the app's TTS provider (docs/voice.md).
        # A persona may speak with a cloned voice (voice_...): the catalog resolves
        # it to the provider's voice, and refuses it once revoked.
        state.service.voice = ReplyVoice(
            voice.tts,
            default=VoiceSettings(voice=voice.config.tts_voice, language=voice.config.tts_language),
            config=voice.config,
            resolve_voice=voices_api.voice_catalog(app).resolve,
        )
        tune_collector()
        log.info("salon_ready", provider=state.provider.name)
        maintenance = asyncio.create_task(maintenance_loop(state))
        try:
            yield
        finally:
            maintenance.cancel()
            log.info("salon_stopping", open_connections=len(state.connections))
            await close_state(state)
            if state.service.voice is not None:
                await state.service.voice.close()
            await audio_api.close_voice(app)

    routes = [
        *http_api.routes,
        *jobs_api.routes,
        *users_api.routes,
        *memories_api.routes,
        *analytics_api.routes,
        *moderation_api.routes,
        *feeds_api.routes,
        *audio_api.routes,
        *voices_api.routes,
        *media_api.routes,
        *social_api.routes,
        *takeover_api.routes,
        *console_api.routes,
        *webhooks_api.routes,
        *openai_api.routes,
        *docs_routes,
        WebSocketRoute("/v1/ws", websocket_endpoint),
        WebSocketRoute("/v1/ops/ws", ops_endpoint),
        *console_routes,
    ]
    middleware = [Middleware(AccessLogMiddleware)]
    if settings.allowed_origins:
        # The chat widget runs on the allowlisted sites and calls the API from
        # there (branding, history). Bearer tokens, never cookies: no credentials mode.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.allowed_origins,
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                allow_headers=["Authorization", "Content-Type"],
                max_age=600,
            )
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPError: _http_error, Exception: _unhandled},
        lifespan=lifespan,
    )


__all__ = ["Route", "create_app"]
