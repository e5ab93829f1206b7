"""Image generators: procedural (embedded), diffusers (a tiny real pipeline), OpenAI (loopback fake), registry.

The diffusers tests load a tiny random-weight Stable Diffusion pipeline built
once per session (tests/diffusers_tiny.py) through the generator's real
``from_pretrained`` path. Its worker thread is not tied to an event loop, so
the function-scoped test loops share one generator per module.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import itertools
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from media.generation import MediaGenerationError, MediaRequest, PersonaLook
from media.images import registry
from media.images.base import ImageGenerator, round_to
from media.images.openai_images import OpenAIImageGenerator, api_size
from media.images.procedural import ProceduralImageGenerator, drawable, initials
from media.images.registry import create_image_generator
from media.media_config import MediaConfig
from tests.fakes.loopback import free_port
from tests.fakes.openai_images_server import FakeOpenAIImages

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
has_diffusers = importlib.util.find_spec("diffusers") is not None
needs_diffusers = pytest.mark.skipif(not has_diffusers, reason="diffusers is in the images extra")


def image_request(prompt: str = "a portrait", **kw: Any) -> MediaRequest:
    return MediaRequest(kind="image", prompt=prompt, **kw)


class Recorder:
    """A Progress callback that keeps what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []

    async def __call__(self, fraction: float, **info: Any) -> None:
        self.events.append((fraction, info))

    @property
    def fractions(self) -> list[float]:
        return [f for f, _ in self.events]


def decode(data: bytes) -> Image.Image:
    assert data.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def mean_rgb(data: bytes) -> list[float]:
    return ImageStat.Stat(decode(data).convert("RGB")).mean


# -- procedural (the embedded default) -------------------------------------------


ADA = PersonaLook("Ada Lovelace", {"colors": "teal and gold"})


async def test_procedural_is_deterministic_per_seed() -> None:
    gen = ProceduralImageGenerator()
    first = await gen.generate(image_request("a sunset over the sea", persona=ADA, seed=7))
    again = await gen.generate(image_request("a sunset over the sea", persona=ADA, seed=7))
    other = await gen.generate(image_request("a sunset over the sea", persona=ADA, seed=8))
    assert first.data == again.data
    assert first.data != other.data
    assert first.meta["seed"] == 7 and first.meta["placeholder"] is True


async def test_procedural_without_seed_is_stable_per_request_and_reports_its_seed() -> None:
    gen = ProceduralImageGenerator()
    a = await gen.generate(image_request("stars over the city", persona=ADA))
    b = await gen.generate(image_request("stars over the city", persona=ADA))
    c = await gen.generate(image_request("a quiet forest", persona=ADA))
    assert a.data == b.data and a.data != c.data
    again = await gen.generate(
        image_request("stars over the city", persona=ADA, seed=a.meta["seed"])
    )
    assert again.data == a.data
    assert a.meta["motifs"] == ["stars", "city"]


@pytest.mark.parametrize(("width", "height"), [(512, 512), (320, 200), (96, 640)])
async def test_procedural_png_has_the_requested_size(width: int, height: int) -> None:
    result = await ProceduralImageGenerator().generate(
        image_request("me at the beach", persona=ADA, width=width, height=height, seed=1)
    )
    image = decode(result.data)
    assert result.mime == "image/png" and image.format == "PNG"
    assert image.size == (width, height) == (result.width, result.height)


async def test_procedural_progress_is_monotonic_to_one_per_stage() -> None:
    progress = Recorder()
    await ProceduralImageGenerator().generate(image_request("hello", persona=ADA), progress)
    fractions = progress.fractions
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(b > a for a, b in itertools.pairwise(fractions))
    stages = [info["stage"] for _, info in progress.events]
    assert stages == ["background", "shapes", "motif", "portrait", "caption", "encode", "done"]


async def test_procedural_personas_and_prompts_change_the_picture() -> None:
    gen = ProceduralImageGenerator()
    ada = await gen.generate(image_request("a selfie", persona=PersonaLook("Ada"), seed=3))
    marco = await gen.generate(image_request("a selfie", persona=PersonaLook("Marco"), seed=3))
    # Not only different bytes: visibly different colours.
    diff = sum(abs(x - y) for x, y in zip(mean_rgb(ada.data), mean_rgb(marco.data), strict=True))
    assert diff > 15
    blue = await gen.generate(image_request("a blue ocean", persona=ADA, seed=3))
    red = await gen.generate(image_request("a red fire", persona=ADA, seed=3))
    b_rgb, r_rgb = mean_rgb(blue.data), mean_rgb(red.data)
    assert b_rgb[2] > b_rgb[0] and r_rgb[0] > r_rgb[2]


async def test_procedural_says_it_is_a_placeholder() -> None:
    result = await ProceduralImageGenerator().generate(
        image_request("a bright snowy winter day", persona=ADA, seed=2)
    )
    image = decode(result.data)
    assert "Procedural placeholder" in image.info["Description"]
    # The caption band along the bottom is darkened behind its white text.
    band = ImageStat.Stat(image.convert("L").crop((0, 490, 512, 512))).mean[0]
    above = ImageStat.Stat(image.convert("L").crop((0, 440, 512, 470))).mean[0]
    assert band < above - 20


def test_initials_and_drawable_names() -> None:
    assert initials("Ada Lovelace") == "AL"
    assert initials("marco") == "M"
    assert initials("") == "?"
    assert drawable("Zoë  Brontë") == "Zoe Bronte"
    assert drawable("小明") == ""


async def test_procedural_is_fast() -> None:
    gen = ProceduralImageGenerator()
    await gen.generate(image_request("warm up", persona=ADA))
    times = []
    for seed in range(3):
        began = time.perf_counter()
        await gen.generate(image_request("mountains at sunset", persona=ADA, seed=seed))
        times.append(time.perf_counter() - began)
    # ~30 ms here; the bound leaves room for a busy shared CI machine.
    assert statistics.median(times) < 0.5


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (image_request("   "), "empty"),
        (image_request("x", width=16), "outside"),
        (image_request("x", height=5000), "outside"),
        (MediaRequest(kind="video", prompt="x"), "cannot make a video"),
        (image_request("x", steps=0), "steps"),
    ],
)
async def test_invalid_requests_are_refused(request_: MediaRequest, fragment: str) -> None:
    with pytest.raises(MediaGenerationError) as info:
        await ProceduralImageGenerator().generate(request_)
    assert info.value.code == "invalid_request" and fragment in str(info.value)


async def test_procedural_stops_when_cancelled_between_stages() -> None:
    reached = asyncio.Event()
    progress = Recorder()

    async def slow_progress(fraction: float, **info: Any) -> None:
        await progress(fraction, **info)
        if info["stage"] == "shapes":
            reached.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(
        ProceduralImageGenerator().generate(image_request("x", persona=ADA), slow_progress)
    )
    await asyncio.wait_for(reached.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [info["stage"] for _, info in progress.events] == ["background", "shapes"]


def test_round_to() -> None:
    assert [round_to(v, 8) for v in (70, 60, 64, 3, 1021)] == [72, 64, 64, 8, 1024]


# -- diffusers: a tiny random-weight pipeline through the real code path ----------


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not has_diffusers:
        pytest.skip("diffusers is in the images extra")
    from tests.diffusers_tiny import build_tiny_sd_pipeline

    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipeline")


@pytest.fixture(scope="module")
def tiny_sd(tiny_sd_folder: Path) -> Iterator[Any]:
    from media.images.diffusers_image import DiffusersImageGenerator

    gen = DiffusersImageGenerator(tiny_sd_folder, device="cpu", default_steps=4)
    yield gen
    asyncio.run(gen.close())


@needs_diffusers
async def test_diffusers_loads_the_pipeline_and_makes_a_png(tiny_sd: Any) -> None:
    await tiny_sd.start()
    assert tiny_sd.load_seconds is not None and tiny_sd.capabilities.device == "cpu"
    result = await tiny_sd.generate(image_request("a cat and the dog", width=64, height=64, seed=1))
    image = decode(result.data)
    assert image.size == (64, 64) and result.mime == "image/png"
    assert result.meta["pipeline"] == "StableDiffusionPipeline"
    assert result.meta["steps"] == 4 and result.meta["seed"] == 1
    assert result.meta["dtype"] == "float32"
    # The pipeline's own safety checker is not loaded: Salon checks images itself.
    assert getattr(tiny_sd._pipe, "safety_checker", None) is None


@needs_diffusers
async def test_diffusers_reports_progress_per_step(tiny_sd: Any) -> None:
    progress = Recorder()
    await tiny_sd.generate(image_request("a cat", width=64, height=64, steps=6, seed=2), progress)
    steps = [info.get("step") for _, info in progress.events if info.get("stage") == "denoise"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert all(info["steps"] == 6 for _, info in progress.events if info["stage"] == "denoise")
    fractions = progress.fractions
    assert all(b > a for a, b in itertools.pairwise(fractions))
    assert fractions[-1] == 1.0 and progress.events[-1][1]["stage"] == "done"


@needs_diffusers
async def test_diffusers_seed_is_reproducible(tiny_sd: Any) -> None:
    a = await tiny_sd.generate(image_request("a red house", width=64, height=64, seed=11))
    b = await tiny_sd.generate(image_request("a red house", width=64, height=64, seed=11))
    c = await tiny_sd.generate(image_request("a red house", width=64, height=64, seed=12))
    assert a.data == b.data and a.data != c.data
    unseeded = await tiny_sd.generate(image_request("a red house", width=64, height=64))
    again = await tiny_sd.generate(
        image_request("a red house", width=64, height=64, seed=unseeded.meta["seed"])
    )
    assert again.data == unseeded.data


@needs_diffusers
async def test_diffusers_passes_negative_prompt_and_rounds_sizes(tiny_sd: Any) -> None:
    plain = await tiny_sd.generate(image_request("a house", width=64, height=64, seed=5))
    negative = await tiny_sd.generate(
        image_request("a house", width=64, height=64, seed=5, negative_prompt="ugly and blurry")
    )
    assert plain.data != negative.data
    odd = await tiny_sd.generate(image_request("a house", width=70, height=100, seed=5))
    assert decode(odd.data).size == (72, 104) == (odd.width, odd.height)


@needs_diffusers
async def test_diffusers_cancellation_stops_between_steps(tiny_sd: Any) -> None:
    await tiny_sd.start()
    started = asyncio.Event()

    async def progress(fraction: float, **info: Any) -> None:
        if info.get("step", 0) >= 2:
            started.set()

    task = asyncio.create_task(
        tiny_sd.generate(image_request("a boat", width=64, height=64, steps=500, seed=1), progress)
    )
    await asyncio.wait_for(started.wait(), 30)
    began = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await tiny_sd.wait_idle()
    assert tiny_sd.last_run["cancelled"] is True
    assert 2 <= tiny_sd.last_run["steps_done"] < 500
    assert time.perf_counter() - began < 5
    # The worker is free again: the next request runs normally.
    result = await tiny_sd.generate(image_request("a boat", width=64, height=64, seed=1))
    assert result.meta["steps"] == 4


@needs_diffusers
async def test_diffusers_failed_progress_consumer_does_not_lose_the_image(tiny_sd: Any) -> None:
    async def broken(fraction: float, **info: Any) -> None:
        if info.get("stage") == "denoise":
            raise RuntimeError("event log down")

    result = await tiny_sd.generate(image_request("a tree", width=64, height=64, seed=3), broken)
    assert decode(result.data).size == (64, 64)


def test_diffusers_missing_folder_is_unavailable(tmp_path: Path) -> None:
    from media.images.diffusers_image import DiffusersImageGenerator

    with pytest.raises(MediaGenerationError) as info:
        DiffusersImageGenerator(tmp_path / "nowhere")
    assert info.value.code == "generator_unavailable"
    assert "SALON_IMAGE_DIFFUSERS_MODEL" in str(info.value)


def index_only(tmp_path: Path) -> Path:
    """A folder that looks like a pipeline (model_index.json) and holds no weights."""
    (tmp_path / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}'
    )
    return tmp_path


def test_diffusers_unknown_device_is_unavailable(tmp_path: Path) -> None:
    from media.images.diffusers_image import DiffusersImageGenerator

    with pytest.raises(MediaGenerationError) as info:
        DiffusersImageGenerator(index_only(tmp_path), device="tpu")
    assert info.value.code == "generator_unavailable" and "SALON_IMAGE_DEVICE" in str(info.value)


@needs_diffusers
async def test_diffusers_broken_folder_is_unavailable(tmp_path: Path) -> None:
    from media.images.diffusers_image import DiffusersImageGenerator

    gen = DiffusersImageGenerator(index_only(tmp_path), device="cpu")
    try:
        with pytest.raises(MediaGenerationError) as info:
            await gen.generate(image_request("x", width=64, height=64))
        assert info.value.code == "generator_unavailable"
        assert "could not load the diffusers pipeline" in str(info.value)
    finally:
        await gen.close()


async def test_diffusers_missing_package_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from media.images.diffusers_image import DiffusersImageGenerator

    monkeypatch.setitem(sys.modules, "diffusers", None)
    gen = DiffusersImageGenerator(index_only(tmp_path), device="cpu")
    try:
        with pytest.raises(MediaGenerationError) as info:
            await gen.generate(image_request("x", width=64, height=64))
        assert info.value.code == "generator_unavailable"
        assert "salon[images]" in str(info.value)
    finally:
        await gen.close()


@needs_diffusers
async def test_diffusers_cuda_without_gpu_is_unavailable(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from media.images.diffusers_image import DiffusersImageGenerator

    gen = DiffusersImageGenerator(index_only(tmp_path), device="cuda")
    try:
        with pytest.raises(MediaGenerationError) as info:
            await gen.start()
        assert info.value.code == "generator_unavailable" and "CUDA" in str(info.value)
    finally:
        await gen.close()


# -- OpenAI-compatible images API, against a loopback fake ------------------------

KEY = "sk-images-test"


@pytest.fixture(scope="module")
def fake_images() -> Iterator[FakeOpenAIImages]:
    server = FakeOpenAIImages(api_key=KEY).start()
    yield server
    server.stop()


def openai_gen(server: FakeOpenAIImages, **kw: Any) -> OpenAIImageGenerator:
    options: dict[str, Any] = {"api_key": KEY, "base_url": server.base_url, "timeout": 10.0}
    options.update(kw)
    return OpenAIImageGenerator(**options)


async def test_openai_gpt_image_request_and_png(fake_images: FakeOpenAIImages) -> None:
    gen = openai_gen(fake_images, model="gpt-image-1")
    progress = Recorder()
    try:
        result = await gen.generate(image_request("a lighthouse", width=512, height=512), progress)
    finally:
        await gen.close()
    sent = fake_images.requests[-1]
    assert sent["model"] == "gpt-image-1" and sent["size"] == "1024x1024" and sent["n"] == 1
    assert "response_format" not in sent and sent["output_format"] == "png"
    assert decode(result.data).size == (1024, 1024) == (result.width, result.height)
    assert progress.fractions == [0.0, 1.0]
    assert result.meta["generator"] == "openai" and result.meta["model"] == "gpt-image-1"


async def test_openai_dalle_and_compatible_models(fake_images: FakeOpenAIImages) -> None:
    dalle = openai_gen(fake_images, model="dall-e-3")
    compatible = openai_gen(fake_images, model="sd-turbo")
    try:
        wide = await dalle.generate(image_request("a wide valley", width=800, height=450, seed=3))
        sent = fake_images.requests[-1]
        assert sent["response_format"] == "b64_json" and sent["size"] == "1792x1024"
        assert wide.meta["revised_prompt"] == "A picture of a wide valley"
        assert wide.meta["ignored"] == ["seed"]
        small = await compatible.generate(image_request("a cup", width=320, height=192))
        assert fake_images.requests[-1]["size"] == "320x192"
        assert decode(small.data).size == (320, 192)
    finally:
        await dalle.close()
        await compatible.close()


async def test_openai_jpeg_and_url_answers_become_png(fake_images: FakeOpenAIImages) -> None:
    gen = openai_gen(fake_images, model="sd-turbo")
    try:
        jpeg = await gen.generate(image_request("a fox [jpeg]", width=128, height=128))
        linked = await gen.generate(image_request("a fox [url]", width=128, height=128))
    finally:
        await gen.close()
    for result in (jpeg, linked):
        assert result.mime == "image/png" and decode(result.data).size == (128, 128)


@pytest.mark.parametrize(
    ("prompt", "options", "code", "fragment"),
    [
        ("a cat", {"api_key": "sk-wrong"}, "generator_unavailable", "SALON_IMAGE_OPENAI_API_KEY"),
        ("a cat [refuse]", {}, "generation_refused", "safety system"),
        ("a cat [slow]", {"timeout": 0.3}, "generation_timeout", "in time"),
        ("a cat [500]", {}, "generation_failed", "HTTP 500"),
        ("a cat [400]", {}, "invalid_request", "Invalid value"),
        ("a cat [empty]", {}, "generation_failed", "no image"),
    ],
)
async def test_openai_errors_map_to_codes(
    fake_images: FakeOpenAIImages, prompt: str, options: dict[str, Any], code: str, fragment: str
) -> None:
    gen = openai_gen(fake_images, model="dall-e-2", **options)
    try:
        with pytest.raises(MediaGenerationError) as info:
            await gen.generate(image_request(prompt, width=256, height=256))
    finally:
        await gen.close()
    assert info.value.code == code and fragment in str(info.value)


async def test_openai_unreachable_endpoint_is_unavailable() -> None:
    nowhere = OpenAIImageGenerator(api_key=KEY, base_url=f"http://127.0.0.1:{free_port()}/v1")
    try:
        with pytest.raises(MediaGenerationError) as info:
            await nowhere.generate(image_request("a cat"))
    finally:
        await nowhere.close()
    assert info.value.code == "generator_unavailable"
    assert "SALON_IMAGE_OPENAI_BASE_URL" in str(info.value)


def test_openai_needs_a_key_or_base_url() -> None:
    with pytest.raises(MediaGenerationError) as info:
        OpenAIImageGenerator(api_key=None)
    assert info.value.code == "generator_unavailable"
    assert "SALON_IMAGE_OPENAI_API_KEY" in str(info.value)


def test_api_size_snaps_to_model_sizes() -> None:
    assert api_size("gpt-image-1", 512, 512) == "1024x1024"
    assert api_size("gpt-image-1", 1200, 700) == "1536x1024"
    assert api_size("gpt-image-1.5", 600, 1000) == "1024x1536"
    assert api_size("dall-e-3", 1024, 1800) == "1024x1792"
    assert api_size("dall-e-2", 300, 300) == "256x256"
    assert api_size("dall-e-2", 500, 520) == "512x512"
    assert api_size("flux-schnell", 768, 512) == "768x512"


# -- registry ---------------------------------------------------------------------


def test_registry_default_is_procedural() -> None:
    gen = create_image_generator(MediaConfig(image_provider="auto", image_diffusers_model=None))
    assert isinstance(gen, ProceduralImageGenerator)
    assert gen.kind == "image" and gen.capabilities.needs_weights is False


def test_registry_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALON_IMAGE_PROVIDER", "openai")
    monkeypatch.setenv("SALON_IMAGE_OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("SALON_IMAGE_OPENAI_MODEL", "dall-e-3")
    gen = create_image_generator()
    assert isinstance(gen, OpenAIImageGenerator) and gen.model == "dall-e-3"
    asyncio.run(gen.close())


def test_registry_auto_picks_diffusers_when_a_folder_is_set(tmp_path: Path) -> None:
    from media.images.diffusers_image import DiffusersImageGenerator

    gen = create_image_generator(
        MediaConfig(
            image_provider="auto", image_diffusers_model=index_only(tmp_path), image_steps=9
        )
    )
    assert isinstance(gen, DiffusersImageGenerator)
    assert gen.default_steps == 9 and gen.capabilities.needs_weights is True


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (MediaConfig(image_provider="dall-o-matic"), "unknown image provider"),
        (
            MediaConfig(image_provider="diffusers", image_diffusers_model=None),
            "SALON_IMAGE_DIFFUSERS_MODEL",
        ),
        (
            MediaConfig(
                image_provider="openai", image_openai_api_key=None, image_openai_base_url=None
            ),
            "SALON_IMAGE_OPENAI_API_KEY",
        ),
    ],
)
def test_registry_errors_are_generator_unavailable(config: MediaConfig, fragment: str) -> None:
    with pytest.raises(MediaGenerationError) as info:
        create_image_generator(config)
    assert info.value.code == "generator_unavailable" and fragment in str(info.value)


def test_registry_register_adds_a_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))

    class Mine(ImageGenerator):
        name = "mine"

    registry.register("Mine", lambda config: Mine())
    assert "mine" in registry.known()
    assert isinstance(create_image_generator(MediaConfig(image_provider="mine")), Mine)
