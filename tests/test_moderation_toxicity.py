"""Toxicity through the loopback fake of OpenAI's ``POST /v1/moderations``.

The classifier is the real :class:`EndpointClassifier` (the ``openai`` SDK's
moderations API over HTTP); timeouts and server errors are failures that the
policy's ``toxicity_failure`` turns into a pass (open) or a block (closed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from agents.moderation import build_classifier
from agents.moderation.policy import parse_policy
from agents.moderation.service import ModerationService
from agents.moderation.settings import ModerationSettings
from agents.moderation.toxicity import EndpointClassifier, ToxicityUnavailable
from tests.fakes.openai_server import FakeModeration


@pytest.fixture(scope="module")
def fake_mod() -> Iterator[FakeModeration]:
    server = FakeModeration(slow_seconds=3).start()
    yield server
    server.stop()


async def test_endpoint_flags_toxic_text(fake_mod: FakeModeration) -> None:
    clf = EndpointClassifier(fake_mod.base_url, "k", "omni-moderation-latest", timeout=2)
    try:
        toxic = await clf.classify("you are [toxic]")
        assert toxic.flagged and toxic.categories == ["harassment"]
        assert toxic.scores["harassment"] == pytest.approx(0.97)
        clean = await clf.classify("what a lovely day")
        assert not clean.flagged and not clean.toxic(None)
        borderline = await clf.classify("hmm [borderline]")
        assert not borderline.toxic(None) and borderline.toxic(0.5)
        assert "what a lovely day" in fake_mod.moderation_inputs
    finally:
        await clf.close()


@pytest.mark.parametrize("marker", ["[modslow]", "[mod500]"])
async def test_endpoint_failures_are_unavailable(fake_mod: FakeModeration, marker: str) -> None:
    clf = EndpointClassifier(fake_mod.base_url, None, None, timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(ToxicityUnavailable):
            await clf.classify(f"hello {marker}")
    finally:
        await clf.close()
    assert time.monotonic() - started < 2  # bounded by the timeout, no retries


async def test_policy_decides_fail_open_or_closed(fake_mod: FakeModeration) -> None:
    clf = EndpointClassifier(fake_mod.base_url, None, None, timeout=0.5)
    service = ModerationService(store=None, events=None, classifier=clf)  # type: ignore[arg-type]
    try:
        opened = parse_policy({"toxicity_failure": "open"})
        assert await service._toxicity(opened, "x [modslow]", "block") is None
        closed = parse_policy({"toxicity_failure": "closed"})
        hit = await service._toxicity(closed, "x [modslow]", "block")
        assert hit is not None and hit.action == "block" and hit.kinds == ["unavailable"]
        flagged = parse_policy({"toxicity": {"input": "flag"}, "toxicity_threshold": 0.5})
        hit = await service._toxicity(flagged, "[borderline]", "flag")
        assert hit is not None and hit.action == "flag"
    finally:
        await clf.close()


def test_classifier_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("BASE_URL", "CLASSIFIER", "MODEL", "API_KEY"):
        monkeypatch.delenv(f"SALON_MODERATION_{key}", raising=False)
    assert build_classifier(ModerationSettings(), None) is None  # none by default
    monkeypatch.setenv("SALON_MODERATION_BASE_URL", "http://127.0.0.1:9/v1")
    assert isinstance(build_classifier(ModerationSettings(), None), EndpointClassifier)
    monkeypatch.setenv("SALON_MODERATION_CLASSIFIER", "none")
    assert build_classifier(ModerationSettings(), None) is None
