"""Video from a local diffusers pipeline folder: image-to-video or text-to-video.

``SALON_VIDEO_DIFFUSERS_MODEL`` names a folder saved by ``save_pretrained``
(or a downloaded model snapshot): Stable Video Diffusion animates the
persona's picture; a text-to-video pipeline (Wan, LTX-Video, CogVideoX,
ModelScope's TextToVideoSD, ...) draws the prompt. The pipeline class comes
from the folder's ``model_index.json``; whether it wants a picture or a
prompt is read from its ``__call__`` signature, so classes not listed in
:data:`KNOWN_PIPELINES` work when they follow diffusers' usual arguments.

Loading is ``local_files_only=True``: nothing is ever fetched from a hub.
Progress is reported per denoising step (``callback_on_step_end``, or the
older ``callback`` for pipelines that only have that), then per encoded
frame; a cancelled task stops the pipeline at its next step.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from media.generation import (
    GeneratedMedia,
    GeneratorCapabilities,
    MediaGenerationError,
    MediaRequest,
    Progress,
    no_progress,
)
from media.video.base import (
    INSTALL_HINT,
    VIDEO_MIME,
    VideoGenerator,
    VideoPlan,
    decode_image,
    plan_video,
)
from media.video.encode import encode_mp4
from media.worker import StepReporter, WorkCancelled, run_in_thread

# Share of the progress bar for the denoising steps; the VAE decode (no
# callback inside the pipeline) and the MP4 encoding take the rest.
STEPS_SHARE = 0.85
DECODED_AT = 0.9
# Frame and pixel sizes these models accept: the VAE and the UNet's
# down-sampling need sizes divisible by 8 x 2^n; 64 suits every pipeline above.
SIZE_MULTIPLE = 64
DEFAULT_MAX_FRAMES = 48  # when the model's config does not say how many it was trained on


@dataclass(frozen=True)
class PipelineKind:
    """What a pipeline class needs: a picture (image-to-video) or not, and its frame rule."""

    image: bool
    frame_step: int = 1  # num_frames must be frame_step * k + 1 when > 1 (Wan, CogVideoX, LTX)


KNOWN_PIPELINES: dict[str, PipelineKind] = {
    "StableVideoDiffusionPipeline": PipelineKind(image=True),
    "I2VGenXLPipeline": PipelineKind(image=True),
    "CogVideoXImageToVideoPipeline": PipelineKind(image=True, frame_step=4),
    "LTXImageToVideoPipeline": PipelineKind(image=True, frame_step=8),
    "WanImageToVideoPipeline": PipelineKind(image=True, frame_step=4),
    "TextToVideoSDPipeline": PipelineKind(image=False),
    "CogVideoXPipeline": PipelineKind(image=False, frame_step=4),
    "LTXPipeline": PipelineKind(image=False, frame_step=8),
    "WanPipeline": PipelineKind(image=False, frame_step=4),
}


def pipeline_class_name(folder: Path) -> str:
    """The ``_class_name`` in a pipeline folder's ``model_index.json``."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise MediaGenerationError(
            f"{folder} is not a diffusers pipeline folder (no model_index.json); "
            "set SALON_VIDEO_DIFFUSERS_MODEL to a folder saved with save_pretrained",
            code="generator_unavailable",
        )
    try:
        name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError) as exc:
        raise MediaGenerationError(
            f"{index} cannot be read: {exc}", code="generator_unavailable"
        ) from exc
    if not isinstance(name, str) or not name:
        raise MediaGenerationError(f"{index} names no pipeline class", code="generator_unavailable")
    return name


def _frame_count(wanted: int, kind: PipelineKind, max_frames: int) -> int:
    frames = max(2, min(wanted, max_frames))
    if kind.frame_step > 1:
        frames = max(1, (frames - 1) // kind.frame_step) * kind.frame_step + 1
    return frames


def _fit(image: Any, width: int, height: int) -> Any:
    """Scale and centre-crop a picture to exactly ``width x height`` (the model's input)."""
    from PIL import ImageOps

    return ImageOps.fit(image, (width, height))


class DiffusersVideoGenerator(VideoGenerator):
    """Image-to-video or text-to-video with a diffusers pipeline from a local folder.

    ``device``: ``auto`` (CUDA when available), ``cpu`` or ``cuda``. ``steps``:
    the default number of denoising steps. ``max_frames`` caps the frames per
    clip (default: the model's trained ``num_frames`` when its config says,
    else 48): a clip longer than that comes out shorter, at the requested fps,
    and the result's ``seconds`` says so.
    """

    name = "diffusers"

    def __init__(
        self,
        model_dir: Path | str | None,
        *,
        device: str = "auto",
        steps: int = 25,
        max_frames: int | None = None,
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir else None
        self.device_setting = device
        self.default_steps = steps
        self.max_frames_setting = max_frames
        self.capabilities = GeneratorCapabilities(
            local=True,
            needs_weights=True,
            device=device,
            max_width=1280,
            max_height=1280,
            mimes=(VIDEO_MIME,),
        )
        self._pipe: Any = None
        self._class_name = ""
        self._kind = PipelineKind(image=True)
        self._params: frozenset[str] = frozenset()
        self._device = "cpu"
        self._max_frames = DEFAULT_MAX_FRAMES
        self._load_lock = asyncio.Lock()
        self._run_lock = asyncio.Lock()  # one pipeline call at a time: it is not reentrant

    @property
    def pipeline_class(self) -> str:
        """The loaded pipeline's class name ('' before loading)."""
        return self._class_name

    @property
    def image_to_video(self) -> bool:
        """True when the loaded pipeline animates a picture rather than drawing a prompt."""
        return self._kind.image

    async def start(self) -> None:
        """Load the pipeline now (in a thread) instead of on the first request."""
        async with self._load_lock:
            if self._pipe is None:
                await run_in_thread(lambda _reporter: self._load())

    def _load(self) -> None:
        if self.model_dir is None:
            raise MediaGenerationError(
                "no video model folder: set SALON_VIDEO_DIFFUSERS_MODEL",
                code="generator_unavailable",
            )
        if not self.model_dir.is_dir():
            raise MediaGenerationError(
                f"SALON_VIDEO_DIFFUSERS_MODEL={self.model_dir} is not a folder",
                code="generator_unavailable",
            )
        class_name = pipeline_class_name(self.model_dir)
        try:
            import diffusers
            import torch
        except ImportError as exc:
            raise MediaGenerationError(
                f"diffusers video needs torch and diffusers: {INSTALL_HINT} "
                "(torch comes with 'salon[local-models]')",
                code="generator_unavailable",
            ) from exc
        device = self.device_setting
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise MediaGenerationError(
                "SALON_VIDEO_DEVICE=cuda but no CUDA device is available",
                code="generator_unavailable",
            )
        # Half precision halves GPU memory for these models; CPUs run float32.
        dtype = torch.float16 if device == "cuda" else torch.float32
        pipeline_cls = getattr(diffusers, class_name, None) or diffusers.DiffusionPipeline
        try:
            pipe = pipeline_cls.from_pretrained(
                str(self.model_dir), local_files_only=True, dtype=dtype
            )
        except Exception as exc:
            raise MediaGenerationError(
                f"cannot load the video pipeline from {self.model_dir}: {exc}",
                code="generator_unavailable",
            ) from exc
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        params = frozenset(inspect.signature(pipe.__call__).parameters)
        kind = KNOWN_PIPELINES.get(class_name) or PipelineKind(
            image="image" in params and "prompt" not in params
        )
        if not kind.image and "prompt" not in params:
            raise MediaGenerationError(
                f"{class_name} takes neither an image nor a prompt", code="generator_unavailable"
            )
        trained = self._trained_frames(pipe)
        self._max_frames = self.max_frames_setting or trained or DEFAULT_MAX_FRAMES
        self._pipe, self._class_name, self._kind = pipe, class_name, kind
        self._params, self._device = params, device
        self.capabilities = replace(self.capabilities, device=device)  # "auto" resolved

    async def close(self) -> None:
        """Drop the pipeline (and, on CUDA, give its memory back to the driver)."""
        async with self._run_lock:
            pipe, self._pipe = self._pipe, None
            if pipe is not None and self._device == "cuda":
                import torch

                del pipe
                torch.cuda.empty_cache()

    @staticmethod
    def _trained_frames(pipe: Any) -> int | None:
        for part in ("unet", "transformer"):
            config = getattr(getattr(pipe, part, None), "config", None)
            frames = getattr(config, "num_frames", None) if config is not None else None
            if isinstance(frames, int) and frames > 1:
                return frames
        return None

    async def generate(
        self, request: MediaRequest, progress: Progress = no_progress
    ) -> GeneratedMedia:
        """Run the pipeline for ``request`` and encode its frames as an MP4."""
        plan = plan_video(request, self.capabilities)
        await self.start()
        steps = int(request.steps or self.default_steps)
        if not (1 <= steps <= 200):
            raise MediaGenerationError("steps must be 1..200", code="invalid_request")
        width = max(SIZE_MULTIPLE, plan.width - plan.width % SIZE_MULTIPLE)
        height = max(SIZE_MULTIPLE, plan.height - plan.height % SIZE_MULTIPLE)
        frames = _frame_count(plan.frames, self._kind, self._max_frames)
        clip = VideoPlan(width=width, height=height, fps=plan.fps, frames=frames)
        picture = request.image or request.persona.image
        if self._kind.image and picture is None:
            raise MediaGenerationError(
                f"{self._class_name} animates a picture: pass an image or a persona image",
                code="invalid_request",
            )
        if not self._kind.image and not request.prompt.strip():
            raise MediaGenerationError(
                "a text-to-video model needs a prompt", code="invalid_request"
            )
        seed = int(request.seed) if request.seed is not None else random.getrandbits(32)

        def work(reporter: StepReporter) -> bytes:
            source = decode_image(picture) if self._kind.image and picture is not None else None
            rgb = self._run(request, clip, steps, seed, source, reporter)
            reporter.report(DECODED_AT, stage="decoded")
            return encode_mp4(
                rgb,
                width=clip.width,
                height=clip.height,
                fps=clip.fps,
                count=len(rgb),
                report=reporter.scaled(DECODED_AT, 1.0),
            )

        async with self._run_lock:
            data = await run_in_thread(work, progress)
        return GeneratedMedia(
            data=data,
            mime=VIDEO_MIME,
            width=clip.width,
            height=clip.height,
            seconds=clip.seconds,
            meta={
                "generator": self.name,
                "model": self.model_dir.name if self.model_dir else None,
                "pipeline": self._class_name,
                "mode": "image-to-video" if self._kind.image else "text-to-video",
                "steps": steps,
                "seed": seed,
                "fps": clip.fps,
                "frames": clip.frames,
                "device": self._device,
                "codec": "h264",
            },
        )

    def _run(
        self,
        request: MediaRequest,
        clip: VideoPlan,
        steps: int,
        seed: int,
        source: Any,
        reporter: StepReporter,
    ) -> list[bytes]:
        """The pipeline call (in the worker thread); returns rgb24 frames of the clip's size."""
        import torch

        params = self._params
        # A CPU generator gives the same noise on CPU and CUDA for one seed.
        kwargs: dict[str, Any] = {
            "height": clip.height,
            "width": clip.width,
            "num_frames": clip.frames,
            "num_inference_steps": steps,
            "generator": torch.Generator(device="cpu").manual_seed(seed),
            "output_type": "np",
        }
        if self._kind.image:
            kwargs["image"] = _fit(source, clip.width, clip.height)
        if "prompt" in params and request.prompt.strip():
            kwargs["prompt"] = request.prompt
        if "negative_prompt" in params and request.negative_prompt:
            kwargs["negative_prompt"] = request.negative_prompt
        if "fps" in params:  # SVD's motion conditioning
            kwargs["fps"] = clip.fps
        if "frame_rate" in params:  # LTX-Video's
            kwargs["frame_rate"] = clip.fps
        if "decode_chunk_size" in params:  # decode a few frames at a time: less peak memory
            kwargs["decode_chunk_size"] = min(8, clip.frames)

        def on_step(step: int) -> None:
            reporter.report(STEPS_SHARE * step / steps, stage="denoising", step=step, steps=steps)

        if "callback_on_step_end" in params:

            def step_end(_pipe: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> Any:
                on_step(index + 1)
                return tensors

            kwargs["callback_on_step_end"] = step_end
        elif "callback" in params:  # older pipelines (TextToVideoSD)
            kwargs["callback"] = lambda index, _t, _latents: on_step(index + 1)
            kwargs["callback_steps"] = 1
        kwargs = {k: v for k, v in kwargs.items() if k in params}
        reporter.check()
        try:
            with torch.inference_mode():
                result = self._pipe(**kwargs)
        except (MediaGenerationError, WorkCancelled):
            raise
        except Exception as exc:
            if "out of memory" in str(exc).lower():
                raise MediaGenerationError(
                    f"the video model ran out of memory at {clip.width}x{clip.height}, "
                    f"{clip.frames} frames: ask for fewer seconds or a smaller size"
                ) from exc
            raise
        return _to_rgb24(result.frames[0], clip.width, clip.height)


def _to_rgb24(frames: Any, width: int, height: int) -> list[bytes]:
    """A pipeline's frames (float arrays in 0..1, uint8 arrays or Pillow images) as rgb24."""
    import numpy as np
    from PIL import Image

    out: list[bytes] = []
    for frame in frames:
        if isinstance(frame, Image.Image):
            image = frame.convert("RGB")
        else:
            array = np.asarray(frame.cpu().float() if hasattr(frame, "cpu") else frame)
            if array.dtype != np.uint8:
                array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
            if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
                array = array.transpose(1, 2, 0)  # channels first (some pipelines' "pt")
            if array.shape[-1] == 1:
                array = np.repeat(array, 3, axis=-1)
            image = Image.fromarray(array, "RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        out.append(image.tobytes())
    return out
