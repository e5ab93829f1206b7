"""The turn engine: one reply, from LLM stream to response events.

It knows nothing of sockets or storage. It takes messages, a provider and
an ``emit`` coroutine, and produces exactly this sequence::

    response.created, response.text.delta*, then ONE of
    response.done | response.cancelled | error (with response_id)

Deltas are coalesced in small time windows: with a fast model that turns a
thousand tiny events into a few dozen, which is what keeps fan-out cheap.
Cancellation is explicit (:meth:`Turn.cancel`) rather than task cancellation,
so the engine can always finish its bookkeeping and emit the final event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from agents import telemetry
from agents.llm.base import ChatMessage, GenerationParams, LLMError, LLMProvider

log = structlog.get_logger(__name__)

Emit = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class TurnResult:
    response_id: str
    text: str
    status: str  # complete | cancelled | error
    error_code: str | None = None
    error_message: str | None = None
    pieces: int = 0


# (message_id to report) <- finish(result): persists the reply before the final event.
# None means this process no longer owns the reply (another took it over): emit nothing.
Finish = Callable[[TurnResult], Awaitable[str | None]]

_END = object()


class OutputModerator(Protocol):
    """Filters a reply as it streams (agents/moderation/stream.py): ``feed`` returns
    what may be shown now; ``blocked`` is an error code once the reply must stop."""

    blocked: str | None

    def feed(self, delta: str) -> str: ...

    async def end(self) -> str: ...

    def drain(self) -> str: ...


class ReplySpeech(Protocol):
    """Speaks the reply as it streams (agents/voice.py ``ReplySpeaker``)."""

    async def settle(self, cancelled: asyncio.Event, *, stop: bool) -> bool: ...

    def heard(self, text: str, played_seconds: float | None) -> str: ...


class Turn:
    """One reply being generated; :meth:`cancel` stops it (barge-in, shutdown)."""

    def __init__(
        self,
        provider: LLMProvider,
        *,
        response_id: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        coalesce_seconds: float = 0.015,
        created_fields: dict[str, Any] | None = None,
        moderate: OutputModerator | None = None,
        speech: ReplySpeech | None = None,
    ) -> None:
        self.provider = provider
        self.response_id = response_id
        self.messages = messages
        self.params = params
        self.coalesce_seconds = coalesce_seconds
        self.created_fields = created_fields or {}
        self.moderate = moderate
        self.speech = speech
        self._cancel = asyncio.Event()
        self.cancel_reason: str | None = None
        self.played_seconds: float | None = None  # the listener's position at a barge-in

    def cancel(self, reason: str = "cancelled", *, played_seconds: float | None = None) -> None:
        """Stop generating; the turn ends with response.cancelled (or error ``reason``).

        ``played_seconds`` (a spoken reply): how much of its audio the
        listener heard; the reply is stored as the text spoken until then.
        """
        if self.cancel_reason is None:
            self.cancel_reason = reason
        if played_seconds is not None and self.played_seconds is None:
            self.played_seconds = played_seconds
        self._cancel.set()

    async def run(self, emit: Emit, finish: Finish) -> TurnResult:
        rid = self.response_id
        queue: asyncio.Queue[object] = asyncio.Queue()
        # The model request goes out first: it travels while response.created is
        # being logged (pieces wait in the queue; nothing is emitted before created).
        producer = asyncio.create_task(self._produce(queue))
        try:
            await emit({"type": "response.created", "response_id": rid, **self.created_fields})
        except BaseException:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer
            raise
        cancel_wait = asyncio.create_task(self._cancel.wait())
        text: list[str] = []
        buffer: list[str] = []
        pieces = 0
        error: LLMError | None = None
        started = time.perf_counter()
        first_at: float | None = None
        provider = self.provider.name
        getter: asyncio.Task[object] | None = None
        moderate = self.moderate  # None: no per-delta cost at all

        async def flush() -> None:
            if buffer:
                delta = "".join(buffer)
                buffer.clear()
                if moderate is not None:
                    delta = moderate.feed(delta)  # held back, masked, or blocked
                    if moderate.blocked is not None:
                        self.cancel(moderate.blocked)
                    if not delta:
                        return
                text.append(delta)
                await emit({"type": "response.text.delta", "response_id": rid, "delta": delta})

        try:
            flush_at: float | None = None
            while True:
                if getter is None and not queue.empty():
                    # Fast path: a fast model queues many pieces between two
                    # wake-ups; taking them without a task and a wait() per piece
                    # halves the engine's cost per token.
                    if self._cancel.is_set():
                        break
                    item = queue.get_nowait()
                else:
                    timeout = None if flush_at is None else max(0.0, flush_at - time.monotonic())
                    # One pending get() survives flush timeouts, so no piece is dropped.
                    if getter is None:
                        getter = asyncio.create_task(queue.get())
                    done, _ = await asyncio.wait(
                        {getter, cancel_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    if cancel_wait in done:
                        break
                    if getter not in done:  # the coalescing window closed
                        await flush()
                        flush_at = None
                        continue
                    item = getter.result()
                    getter = None
                if item is _END:
                    break
                if isinstance(item, LLMError):
                    error = item
                    break
                pieces += 1
                if first_at is None:
                    first_at = time.perf_counter()
                    telemetry.FIRST_TOKEN.labels(provider).observe(first_at - started)
                buffer.append(str(item))
                if flush_at is None:
                    flush_at = time.monotonic() + self.coalesce_seconds
                if time.monotonic() < flush_at:
                    continue
                await flush()
                flush_at = None
            if error is None and not self._cancel.is_set():
                await flush()
                if moderate is not None:
                    tail = await moderate.end()  # the held-back rest, end-of-reply checks
                    if moderate.blocked is not None:
                        self.cancel(moderate.blocked)
                    elif tail:
                        text.append(tail)
                        await emit(
                            {"type": "response.text.delta", "response_id": rid, "delta": tail}
                        )
            elif error is not None and moderate is not None:
                tail = moderate.drain()  # what was held back when the provider failed
                if tail:
                    text.append(tail)
                    await emit({"type": "response.text.delta", "response_id": rid, "delta": tail})
        finally:
            for task in (producer, cancel_wait, getter):
                if task is not None:
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer
        interrupted = False
        if self.speech is not None:
            # A spoken reply ends when its audio does: a cancel until then is a
            # barge-in; a failed or cancelled reply stops speaking at once.
            stop = error is not None or self._cancel.is_set()
            interrupted = await self.speech.settle(self._cancel, stop=stop)
        telemetry.TOKENS.labels(provider).inc(pieces)
        telemetry.RESPONSE_TIME.labels(provider).observe(time.perf_counter() - started)
        # A reply stopped by moderation is retracted: not stored, and the error
        # tells clients to drop what they showed.
        blocked = moderate is not None and moderate.blocked is not None
        reply = "" if blocked else "".join(text)
        if self.speech is not None and self._cancel.is_set() and not blocked:
            reply = self.speech.heard(reply, self.played_seconds)  # what was heard, no more
        if error is not None:
            result = TurnResult(rid, reply, "error", error.code, str(error), pieces)
        elif self._cancel.is_set() and (self.cancel_reason or "cancelled") != "cancelled":
            reason = self.cancel_reason or "cancelled"
            result = TurnResult(rid, reply, "error", reason, _REASONS.get(reason, reason), pieces)
        elif self._cancel.is_set():
            result = TurnResult(rid, reply, "cancelled", pieces=pieces)
        else:
            result = TurnResult(rid, reply, "complete", pieces=pieces)
        try:
            finished_id = await finish(result)
            if finished_id is None:
                log.warning("reply_taken_over", response_id=rid)
                telemetry.RESPONSES.labels("taken_over").inc()
                return result
            message_id = finished_id
        except Exception as exc:
            # The reply could not be stored: still end it, so no client waits forever.
            log.exception("reply_not_stored", response_id=rid)
            result = TurnResult(
                rid,
                reply,
                "error",
                "storage_error",
                f"the reply could not be saved ({type(exc).__name__})",
                pieces,
            )
            message_id = ""
        # audio_flush: the client drops the audio it has queued but not played.
        flushed: dict[str, Any] = {"audio_flush": True} if interrupted else {}
        if result.status == "error":
            await emit({**_error_event(result, message_id), **flushed})
        else:
            kind = "response.done" if result.status == "complete" else "response.cancelled"
            final = {"type": kind, "response_id": rid, "message_id": message_id, "text": reply}
            await emit({**final, **flushed})
        telemetry.RESPONSES.labels(result.status).inc()
        return result

    async def _produce(self, queue: asyncio.Queue[object]) -> None:
        stream = None
        try:
            # Inside the try: a provider may raise as soon as it is called.
            stream = self.provider.stream(self.messages, self.params)
            async for piece in stream:
                if piece:
                    queue.put_nowait(piece)
            queue.put_nowait(_END)
        except LLMError as exc:
            queue.put_nowait(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a provider bug must still end the reply cleanly
            queue.put_nowait(LLMError(f"the language model failed: {type(exc).__name__}"))
        finally:
            aclose = getattr(stream, "aclose", None) if stream is not None else None
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


_REASONS = {
    "shutdown": "the server is shutting down; the reply was interrupted",
    "taken_over": "an operator took over the conversation",
    "moderation_blocked": "the reply was stopped by moderation and withdrawn",
    "moderation_unavailable": "the reply could not be checked by moderation and was withdrawn",
}


def _error_event(result: TurnResult, message_id: str) -> dict[str, Any]:
    return {
        "type": "error",
        "code": result.error_code or "llm_error",
        "message": result.error_message or "the reply failed",
        "response_id": result.response_id,
        "message_id": message_id,
        "text": result.text,
    }
