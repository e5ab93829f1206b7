"""server/app.py tune_collector: the garbage collector's setup while serving."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from server.app import GC_THRESHOLDS, tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _young_collections_while_holding(count: int) -> int:
    """Young collections while ``count`` tracked objects are alive at once."""
    seen: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and info["generation"] == 0:
            seen.append(1)

    gc.callbacks.append(note)
    try:
        held = [[i] for i in range(count)]  # a reply's events in flight, say
        del held
    finally:
        gc.callbacks.remove(note)
    return len(seen)


def test_startup_objects_are_frozen_and_young_collections_are_rare(
    restored_collector: None,
) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    assert _young_collections_while_holding(5000) >= 5  # CPython's default

    tune_collector()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0  # what existed at startup is out of the collector's way
    assert _young_collections_while_holding(5000) == 0
