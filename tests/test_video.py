"""Video generators: the embedded animated portrait and a real (tiny) diffusers pipeline.

Every clip is decoded back with PyAV, so the checks are on what a player
sees: frame count, size, frame rate, codec, pixel format and the index
placement that lets a browser play while downloading.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image, ImageStat

from media.generation import MediaGenerationError, MediaRequest, PersonaLook
from media.media_config import MediaConfig
from media.video.animated import AnimatedPortraitGenerator
from media.video.base import VIDEO_MIME, VideoGenerator
from media.video.registry import create_video_generator
from media.worker import StepReporter, run_in_thread


def _png(size: tuple[int, int] = (320, 240), colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    image = Image.new("RGB", size, colour)
    # A darker square gives the motion something to move (a flat picture hides a frozen one).
    image.paste((20, 20, 120), (size[0] // 3, size[1] // 3, size[0] // 2, size[1] // 2))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _request(**kwargs: Any) -> MediaRequest:
    values: dict[str, Any] = {
        "kind": "video",
        "prompt": "a portrait",
        "width": 160,
        "height": 120,
        "seconds": 1.0,
        "fps": 10,
        "seed": 1,
    }
    values.update(kwargs)
    return MediaRequest(**values)


def _decode(data: bytes) -> tuple[Any, list[Image.Image]]:
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        info = {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "rate": stream.average_rate,
            "width": stream.width,
            "height": stream.height,
        }
        frames = [frame.to_image() for frame in container.decode(stream)]
    return info, frames


def _mean(image: Image.Image) -> list[float]:
    return list(ImageStat.Stat(image.convert("RGB")).mean)


def _dark_spot(image: Image.Image) -> tuple[int, float, float]:
    """Area and centre of the dark square that _png draws (pixels darker than 70)."""
    gray = image.convert("L")
    width = gray.width
    spots = [(i % width, i // width) for i, v in enumerate(gray.tobytes()) if v < 70]
    count = len(spots)
    return count, sum(x for x, _ in spots) / count, sum(y for _, y in spots) / count


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[float, dict[str, Any]]] = []

    async def __call__(self, fraction: float, **info: Any) -> None:
        self.calls.append((fraction, info))


# -- the embedded animated portrait


async def test_animated_clip_decodes_with_the_requested_shape() -> None:
    result = await AnimatedPortraitGenerator().generate(
        _request(image=_png(), width=160, height=120, seconds=2.0, fps=12)
    )
    assert result.mime == VIDEO_MIME == "video/mp4"
    assert (result.width, result.height, result.seconds) == (160, 120, 2.0)
    info, frames = _decode(result.data)
    assert info["codec"] == "h264"
    assert info["pix_fmt"] == "yuv420p"
    assert info["rate"] == 12
    assert (info["width"], info["height"]) == (160, 120)
    assert len(frames) == 24
    # faststart: the index (moov) comes before the media data, so playback starts at once
    assert 0 < result.data.find(b"moov") < result.data.find(b"mdat")
    assert result.meta["source"] == "image"
    assert result.meta["frames"] == 24


async def test_animated_clip_shows_the_input_picture_and_moves() -> None:
    red = _png(colour=(210, 30, 30))
    result = await AnimatedPortraitGenerator().generate(
        _request(image=red, options={"fade_in": 0}, seconds=2.0)
    )
    _, frames = _decode(result.data)
    r, g, _ = _mean(frames[len(frames) // 2])
    assert r > 120 and r > 2 * g  # the red picture, not a placeholder
    area_a, xa, ya = _dark_spot(frames[0])
    area_b, xb, yb = _dark_spot(frames[-1])
    moved = abs(xa - xb) + abs(ya - yb)
    zoomed = abs(area_a - area_b) / area_a
    assert moved > 2 or zoomed > 0.08  # the camera panned or zoomed over the picture


async def test_fade_in_starts_from_black() -> None:
    gen = AnimatedPortraitGenerator()
    faded = await gen.generate(_request(image=_png(colour=(230, 230, 230)), seconds=1.0))
    plain = await gen.generate(
        _request(image=_png(colour=(230, 230, 230)), seconds=1.0, options={"fade_in": 0})
    )
    assert max(_mean(_decode(faded.data)[1][0])) < 30
    assert min(_mean(_decode(plain.data)[1][0])) > 150


async def test_progress_is_per_frame_monotonic_and_ends_at_one() -> None:
    progress = _Recorder()
    await AnimatedPortraitGenerator().generate(_request(seconds=1.5, fps=10), progress)
    fractions = [f for f, _ in progress.calls]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert [info["frame"] for _, info in progress.calls] == list(range(1, 16))
    assert all(info["frames"] == 15 for _, info in progress.calls)


async def test_same_seed_same_file_other_seed_other_motion() -> None:
    gen = AnimatedPortraitGenerator()
    picture = _png()
    a = await gen.generate(_request(image=picture, seed=42))
    b = await gen.generate(_request(image=picture, seed=42))
    c = await gen.generate(_request(image=picture, seed=43))
    assert a.data == b.data
    assert a.data != c.data
    assert a.meta["seed"] == 42


async def test_placeholder_card_when_no_picture_and_persona_image_is_used() -> None:
    gen = AnimatedPortraitGenerator()
    card = await gen.generate(_request(persona=PersonaLook(name="Ada Lovelace")))
    assert card.meta["source"] == "placeholder"
    frame = _decode(card.data)[1][-1]
    colours = frame.convert("RGB").resize((16, 16)).getcolors(256)
    assert colours is not None and len(colours) > 4  # a drawn card, not a flat fill
    persona = PersonaLook(name="Ada", image=_png(colour=(20, 180, 40)))
    own = await gen.generate(_request(persona=persona, options={"fade_in": 0}))
    assert own.meta["source"] == "image"
    r, g, _ = _mean(_decode(own.data)[1][5])
    assert g > 2 * r


async def test_odd_sizes_are_rounded_down_to_even() -> None:
    result = await AnimatedPortraitGenerator().generate(_request(width=161, height=121))
    info, _ = _decode(result.data)
    assert (info["width"], info["height"]) == (160, 120) == (result.width, result.height)


@pytest.mark.parametrize(
    "change",
    [
        {"image": b"not an image"},
        {"image": _png()[:60]},  # truncated PNG
        {"fps": 0},
        {"seconds": 0},
        {"seconds": 600},
        {"width": 10},
        {"width": 5000},
        {"options": {"fade_in": "slow"}},
    ],
)
async def test_bad_requests_are_invalid_request(change: dict[str, Any]) -> None:
    with pytest.raises(MediaGenerationError) as caught:
        await AnimatedPortraitGenerator().generate(_request(**change))
    assert caught.value.code == "invalid_request"


async def test_does_not_block_the_event_loop() -> None:
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    began = time.perf_counter()
    await AnimatedPortraitGenerator().generate(_request(width=640, height=480, seconds=10.0))
    took = time.perf_counter() - began
    done.set()
    await tick
    assert len(gaps) > 5
    # Had the work run on the loop, one gap would span the whole generation.
    assert max(gaps) < max(0.1, took / 3)


async def test_cancel_stops_encoding_early() -> None:
    progress = _Recorder()
    started = asyncio.Event()

    async def report(fraction: float, **info: Any) -> None:
        await progress(fraction, **info)
        if info.get("frame", 0) >= 3:
            started.set()

    # 30 s at 30 fps: 900 frames, far more than can be made before the cancel lands.
    request = _request(width=640, height=480, seconds=30.0, fps=30)
    task = asyncio.create_task(AnimatedPortraitGenerator().generate(request, report))
    await asyncio.wait_for(started.wait(), 30)
    began = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - began < 2.0
    frames_at_cancel = len(progress.calls)
    assert frames_at_cancel < 300
    await asyncio.sleep(0.3)
    assert len(progress.calls) == frames_at_cancel  # the worker thread has stopped


# -- the worker thread shared by the video and avatar generators


async def test_worker_forwards_progress_and_stops_when_cancelled() -> None:
    steps_done = 0

    def work(reporter: StepReporter) -> str:
        nonlocal steps_done
        for step in range(1, 1001):
            time.sleep(0.002)  # a "frame" of CPU work, off the event loop
            steps_done = step
            reporter.report(step / 1000, step=step)
        return "finished"

    progress = _Recorder()
    assert await run_in_thread(lambda r: "quick", progress) == "quick"

    third = asyncio.Event()

    async def report(fraction: float, **info: Any) -> None:
        await progress(fraction, **info)
        if info["step"] == 3:
            third.set()

    task = asyncio.create_task(run_in_thread(work, report))
    await asyncio.wait_for(third.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stopped_at = steps_done
    assert stopped_at < 200  # the thread saw the cancel at its next report
    await asyncio.sleep(0.05)
    assert steps_done == stopped_at  # and it is not running on behind our back
    assert [i["step"] for _, i in progress.calls] == list(range(1, len(progress.calls) + 1))


async def test_worker_reraises_errors_and_keeps_progress_monotonic() -> None:
    def failing(reporter: StepReporter) -> None:
        reporter.report(0.5)
        reporter.report(0.2)  # a stage going backwards is clamped, not shown
        raise ValueError("boom")

    progress = _Recorder()
    with pytest.raises(ValueError, match="boom"):
        await run_in_thread(failing, progress)
    assert [f for f, _ in progress.calls] == [0.5, 0.5]


# -- registry


def test_registry_defaults_to_the_embedded_generator(tmp_path: Path) -> None:
    default = create_video_generator(MediaConfig(video_provider="auto"))
    assert isinstance(default, AnimatedPortraitGenerator)
    assert isinstance(default, VideoGenerator) and default.kind == "video"
    with_folder = create_video_generator(MediaConfig(video_diffusers_model=tmp_path))
    assert with_folder.name == "diffusers"
    with pytest.raises(MediaGenerationError) as caught:
        create_video_generator(MediaConfig(video_provider="sora"))
    assert caught.value.code == "generator_unavailable"


@pytest.mark.parametrize("folder", ["missing", "empty"])
async def test_diffusers_without_a_model_folder_is_unavailable(tmp_path: Path, folder: str) -> None:
    path = tmp_path / "model"
    if folder == "empty":
        path.mkdir()
    generator = create_video_generator(
        MediaConfig(video_provider="diffusers", video_diffusers_model=path)
    )
    with pytest.raises(MediaGenerationError) as caught:
        await generator.generate(_request(image=_png()))
    assert caught.value.code == "generator_unavailable"
    assert "SALON_VIDEO_DIFFUSERS_MODEL" in str(caught.value) or "model_index" in str(caught.value)


# -- diffusers, through the real pipeline code with tiny random weights


@pytest.fixture(scope="module")
def svd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.video_tiny import build_tiny_svd

    return build_tiny_svd(tmp_path_factory.mktemp("svd"))


@pytest.mark.slow
async def test_diffusers_image_to_video_steps_frames_and_seed(svd_folder: Path) -> None:
    from media.video.diffusers_video import DiffusersVideoGenerator

    generator = DiffusersVideoGenerator(svd_folder, device="cpu", steps=3)
    request = _request(image=_png(), width=64, height=64, seconds=0.5, fps=8, seed=5)
    progress = _Recorder()
    result = await generator.generate(request, progress)
    assert generator.pipeline_class == "StableVideoDiffusionPipeline"
    assert result.meta["mode"] == "image-to-video"
    info, frames = _decode(result.data)
    assert (len(frames), info["width"], info["height"], info["rate"]) == (4, 64, 64, 8)
    assert info["pix_fmt"] == "yuv420p"
    steps = [i["step"] for _, i in progress.calls if i.get("stage") == "denoising"]
    assert steps == [1, 2, 3]
    encoded = [i["frame"] for _, i in progress.calls if "frame" in i]
    assert encoded == [1, 2, 3, 4]
    fractions = [f for f, _ in progress.calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    again = await generator.generate(request)
    assert again.data == result.data  # same seed, same noise, same clip
    with pytest.raises(MediaGenerationError) as caught:
        await generator.generate(_request(width=64, height=64, seconds=0.5, fps=8))
    assert caught.value.code == "invalid_request"  # image-to-video without a picture
    await generator.close()


@pytest.mark.slow
async def test_diffusers_cancel_stops_between_steps(svd_folder: Path) -> None:
    from media.video.diffusers_video import DiffusersVideoGenerator

    generator = DiffusersVideoGenerator(svd_folder, device="cpu", steps=50)
    await generator.start()
    first_step = asyncio.Event()
    progress = _Recorder()

    async def report(fraction: float, **info: Any) -> None:
        await progress(fraction, **info)
        first_step.set()

    request = _request(image=_png(), width=64, height=64, seconds=0.5, fps=8, seed=1)
    task = asyncio.create_task(generator.generate(request, report))
    await asyncio.wait_for(first_step.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    steps = [i.get("step") for _, i in progress.calls]
    assert len(steps) < 10  # stopped after a step or two, not after 50
    assert not any("frame" in i for _, i in progress.calls)


@pytest.mark.slow
async def test_diffusers_text_to_video(tmp_path: Path) -> None:
    from media.video.diffusers_video import DiffusersVideoGenerator
    from tests.video_tiny import build_tiny_text_to_video

    folder = build_tiny_text_to_video(tmp_path / "t2v")
    generator = create_video_generator(
        MediaConfig(video_diffusers_model=folder, video_device="cpu", video_steps=2)
    )
    assert isinstance(generator, DiffusersVideoGenerator)
    progress = _Recorder()
    result = await generator.generate(
        _request(prompt="a cat waves", width=64, height=64, seconds=0.5, fps=8), progress
    )
    assert result.meta["mode"] == "text-to-video"
    assert result.meta["pipeline"] == "TextToVideoSDPipeline"
    info, frames = _decode(result.data)
    assert (len(frames), info["width"], info["height"]) == (4, 64, 64)
    # the older pipeline's per-step `callback` drives the same progress
    assert [i["step"] for _, i in progress.calls if "step" in i] == [1, 2]
    with pytest.raises(MediaGenerationError) as caught:
        await generator.generate(_request(prompt="  ", width=64, height=64))
    assert caught.value.code == "invalid_request"
