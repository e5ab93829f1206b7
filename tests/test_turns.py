"""The turn engine, without sockets or storage."""

from __future__ import annotations

import asyncio
from typing import Any

from agents.llm.base import GenerationParams, LLMError
from agents.turns import Turn, TurnResult
from tests.fakes.llm import ScriptedLLM


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.finished: list[TurnResult] = []

    async def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def finish(self, result: TurnResult) -> str:
        self.finished.append(result)
        return "msg_1"

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    @property
    def text(self) -> str:
        return "".join(e["delta"] for e in self.events if e["type"] == "response.text.delta")


def make_turn(provider: ScriptedLLM, coalesce: float = 0.0) -> Turn:
    return Turn(
        provider,
        response_id="resp_1",
        messages=[],
        params=GenerationParams(),
        coalesce_seconds=coalesce,
    )


async def test_complete_reply_events_in_order() -> None:
    rec = Recorder()
    result = await make_turn(ScriptedLLM()).run(rec.emit, rec.finish)
    assert rec.types == ["response.created"] + ["response.text.delta"] * 4 + ["response.done"]
    assert rec.text == "Hello there!" == result.text
    assert rec.events[-1] == {
        "type": "response.done",
        "response_id": "resp_1",
        "message_id": "msg_1",
        "text": "Hello there!",
    }
    assert [r.status for r in rec.finished] == ["complete"]


async def test_finish_runs_before_the_final_event() -> None:
    order: list[str] = []

    async def emit(event: dict[str, Any]) -> None:
        order.append(event["type"])

    async def finish(result: TurnResult) -> str:
        order.append("finish")
        return "m"

    await make_turn(ScriptedLLM()).run(emit, finish)
    assert order[-2:] == ["finish", "response.done"]


async def test_deltas_are_coalesced_within_the_window() -> None:
    rec = Recorder()
    provider = ScriptedLLM([f"t{i} " for i in range(100)])
    await make_turn(provider, coalesce=0.05).run(rec.emit, rec.finish)
    deltas = rec.types.count("response.text.delta")
    assert 1 <= deltas < 10
    assert rec.text == "".join(f"t{i} " for i in range(100))


async def test_coalescing_still_flushes_a_slow_stream_promptly() -> None:
    rec = Recorder()
    provider = ScriptedLLM(["a", "b", "c"], delay=0.1)
    await make_turn(provider, coalesce=0.02).run(rec.emit, rec.finish)
    assert rec.types.count("response.text.delta") == 3  # each piece flushed before the next arrives


async def test_cancel_stops_the_provider_and_keeps_the_partial_text() -> None:
    rec = Recorder()
    provider = ScriptedLLM([f"w{i} " for i in range(1000)], delay=0.005)
    turn = make_turn(provider)
    task = asyncio.create_task(turn.run(rec.emit, rec.finish))
    while rec.types.count("response.text.delta") < 3:
        await asyncio.sleep(0.005)
    turn.cancel()
    result = await task
    assert result.status == "cancelled"
    assert rec.types[-1] == "response.cancelled"
    assert rec.events[-1]["text"] == rec.text == result.text
    assert provider.closed_streams == 1 and provider.finished_streams == 0


async def test_cancel_for_shutdown_ends_with_an_error_event() -> None:
    rec = Recorder()
    turn = make_turn(ScriptedLLM(["x"] * 1000, delay=0.005))
    task = asyncio.create_task(turn.run(rec.emit, rec.finish))
    await asyncio.sleep(0.03)
    turn.cancel("shutdown")
    result = await task
    assert result.status == "error" and result.error_code == "shutdown"
    assert rec.events[-1]["type"] == "error" and rec.events[-1]["code"] == "shutdown"
    assert rec.events[-1]["response_id"] == "resp_1"


async def test_provider_error_mid_stream() -> None:
    rec = Recorder()
    provider = ScriptedLLM(
        ["a", "b", "c"], fail_after=2, error=LLMError("stalled", code="llm_timeout")
    )
    result = await make_turn(provider).run(rec.emit, rec.finish)
    assert result.status == "error" and result.error_code == "llm_timeout"
    assert rec.text == "ab" and rec.events[-1]["code"] == "llm_timeout"
    assert rec.events[-1]["text"] == "ab"
    assert rec.types.count("response.done") == 0


async def test_unexpected_provider_exception_becomes_llm_error() -> None:
    rec = Recorder()
    provider = ScriptedLLM(["a"], fail_after=0, error=ZeroDivisionError("bug"))
    result = await make_turn(provider).run(rec.emit, rec.finish)
    assert result.status == "error" and result.error_code == "llm_error"
    assert "ZeroDivisionError" in (result.error_message or "")


async def test_empty_reply_still_completes() -> None:
    rec = Recorder()
    result = await make_turn(ScriptedLLM([])).run(rec.emit, rec.finish)
    assert result.status == "complete" and rec.types == ["response.created", "response.done"]


async def test_a_reply_that_cannot_be_stored_still_ends() -> None:
    rec = Recorder()

    async def failing_finish(result: TurnResult) -> str:
        raise RuntimeError("database gone")

    result = await make_turn(ScriptedLLM()).run(rec.emit, failing_finish)
    assert result.status == "error" and result.error_code == "storage_error"
    assert rec.events[-1]["type"] == "error" and rec.events[-1]["code"] == "storage_error"


class RaisesOnCall(ScriptedLLM):
    """A provider whose stream() is a plain method that fails before returning an iterator."""

    def stream(self, messages, params):  # type: ignore[no-untyped-def,override]
        raise LLMError("refused at once", code="llm_unavailable")


async def test_a_provider_failing_on_call_ends_the_reply() -> None:
    rec = Recorder()
    result = await asyncio.wait_for(make_turn(RaisesOnCall()).run(rec.emit, rec.finish), 5)
    assert result.error_code == "llm_unavailable"
    assert rec.types == ["response.created", "error"]
