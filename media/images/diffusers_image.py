"""Stable Diffusion class pipelines (SD 1.x/2.x, SDXL, turbo variants) from a local folder, with ``diffusers``.

``SALON_IMAGE_DIFFUSERS_MODEL`` names a pipeline folder as ``save_pretrained``
writes it (``model_index.json`` beside ``unet/``, ``vae/``, ``text_encoder/``,
...). It is loaded with ``local_files_only=True``: nothing is fetched from a
hub. The pipeline's own safety checker is not loaded; Salon runs its own
NSFW check on every image (:mod:`media.safety`), per tenant policy.

One worker thread per generator (a single-worker executor, as
memory/embeddings/minilm.py does) loads the pipeline once and runs one
generation at a time: a GPU or the CPU is fully used by one, and a second
would only slow both. Requests queue first come, first served.

Progress comes from ``callback_on_step_end``. The callback runs on the
worker between two denoising steps and must cost next to nothing there (the
benchmark compares this generator with calling the pipeline directly): it
checks a cancellation flag and queues the report with
``loop.call_soon_threadsafe`` (:class:`~media.images.base.ThreadProgress`),
never waiting for the event loop. A cancelled task sets the flag; the
callback raises at the next step boundary, which ends the pipeline call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
from media.images.base import (
    EXTRA_HINT,
    PNG,
    ImageGenerator,
    ThreadProgress,
    check_request,
    png_bytes,
    round_to,
)

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


class _Cancelled(Exception):
    """Raised inside the step callback to stop the pipeline: its task was cancelled."""


def _needs_extra(exc: ImportError) -> MediaGenerationError:
    return MediaGenerationError(
        f"the diffusers image generator needs torch and diffusers ({exc}); "
        f"install them with: {EXTRA_HINT}",
        code="generator_unavailable",
    )


class DiffusersImageGenerator(ImageGenerator):
    """Text-to-image with a local diffusers pipeline folder; see the module docstring.

    ``device``: ``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu`` or
    ``cuda`` (``cuda:1`` works too); weights are float16 on CUDA, float32 on
    the CPU. ``default_steps`` applies when a request names none.
    ``guidance_scale`` None keeps the pipeline's default (7.5 for SD; set
    0.0 for turbo models that are distilled without guidance).
    """

    name = "diffusers"

    def __init__(
        self,
        model_path: Path | str,
        *,
        device: str = "auto",
        default_steps: int = 20,
        guidance_scale: float | None = None,
    ) -> None:
        self.model_path = Path(model_path).expanduser()
        if not (self.model_path / "model_index.json").is_file():
            raise MediaGenerationError(
                f"no diffusers pipeline at {self.model_path} (no model_index.json): point "
                "SALON_IMAGE_DIFFUSERS_MODEL at a folder written by save_pretrained",
                code="generator_unavailable",
            )
        device = (device or "auto").strip().lower()
        if device.split(":")[0] not in DEVICES:
            raise MediaGenerationError(
                f"unknown image device {device!r} (SALON_IMAGE_DEVICE): auto, cpu or cuda",
                code="generator_unavailable",
            )
        if default_steps < 1:
            raise MediaGenerationError(
                "SALON_IMAGE_STEPS must be at least 1", code="generator_unavailable"
            )
        self.device = device
        self.default_steps = default_steps
        self.guidance_scale = guidance_scale
        # With "auto": cpu until the pipeline is loaded and torch has said
        # whether it sees a GPU (importing torch here would cost seconds).
        self.capabilities = GeneratorCapabilities(
            local=True,
            needs_weights=True,
            device="cpu" if device == "auto" else device.split(":")[0],
            mimes=(PNG,),
        )
        self.load_seconds: float | None = None
        # What the last generation did (steps run, cancelled, seconds): for
        # logs, the benchmark and tests.
        self.last_run: dict[str, Any] = {}
        self._pipe: Any = None
        self._torch_device = "cpu"
        self._dtype = "float32"
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._running: set[threading.Event] = set()

    # -- the worker thread ---------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salon-image")
            return self._executor

    def _ensure_loaded(self) -> Any:
        """Load the pipeline on the worker thread (the only thread that touches it)."""
        if self._pipe is not None:
            return self._pipe
        began = time.perf_counter()
        try:
            import torch
            from diffusers import AutoPipelineForText2Image, DiffusionPipeline
        except ImportError as exc:
            raise _needs_extra(exc) from exc
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise MediaGenerationError(
                "SALON_IMAGE_DEVICE asks for CUDA but torch sees no GPU "
                f"(torch {torch.__version__}); use auto or cpu",
                code="generator_unavailable",
            )
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        options: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
        if self._has_component("safety_checker"):
            # Salon checks images itself (media/safety.py), per tenant policy.
            options.update(safety_checker=None, requires_safety_checker=False)
        try:
            try:
                pipe = AutoPipelineForText2Image.from_pretrained(str(self.model_path), **options)
            except ValueError:
                # A pipeline class AutoPipeline has no text-to-image mapping for:
                # load it as what model_index.json says it is.
                pipe = DiffusionPipeline.from_pretrained(str(self.model_path), **options)
            pipe = pipe.to(device)
        except ImportError as exc:
            raise _needs_extra(exc) from exc
        except Exception as exc:
            raise MediaGenerationError(
                f"could not load the diffusers pipeline from {self.model_path}: "
                f"{type(exc).__name__}: {exc}",
                code="generator_unavailable",
            ) from exc
        # tqdm per step would cost more than our own progress reporting.
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        self._torch_device = device
        self._dtype = str(dtype).removeprefix("torch.")
        self.capabilities = GeneratorCapabilities(
            local=True, needs_weights=True, device=device.split(":")[0], mimes=(PNG,)
        )
        self.load_seconds = time.perf_counter() - began
        log.info(
            "image pipeline %s (%s) loaded on %s in %.2fs",
            self.model_path,
            type(pipe).__name__,
            device,
            self.load_seconds,
        )
        return pipe

    def _has_component(self, component: str) -> bool:
        try:
            index = json.loads((self.model_path / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return component in index

    def _run(
        self,
        request: MediaRequest,
        steps: int,
        width: int,
        height: int,
        seed: int,
        reporter: ThreadProgress,
        cancel: threading.Event,
    ) -> tuple[bytes, dict[str, Any]]:
        """One generation, on the worker: denoise, decode, encode PNG."""
        run: dict[str, Any] = {"steps_requested": steps, "steps_done": 0, "cancelled": False}
        self.last_run = run
        if cancel.is_set():  # cancelled while it waited its turn
            run["cancelled"] = True
            raise _Cancelled
        if self._pipe is None:
            reporter.report(0.0, stage="loading")
        pipe = self._ensure_loaded()
        import torch

        began = time.perf_counter()
        # A CPU generator gives the same noise, so the same image, on any device.
        generator = torch.Generator("cpu").manual_seed(seed)

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> Any:
            # Runs between two denoising steps: keep it to a flag check and a
            # non-blocking hand-off to the event loop.
            done = step + 1
            run["steps_done"] = done
            if cancel.is_set():
                run["cancelled"] = True
                raise _Cancelled
            total = getattr(pipeline, "num_timesteps", None) or steps
            # The VAE decode and PNG encode count as one more step.
            reporter.report(done / (total + 1), stage="denoise", step=done, steps=total)
            return tensors

        call: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or None,
            "num_inference_steps": steps,
            "width": width,
            "height": height,
            "generator": generator,
            "callback_on_step_end": on_step_end,
            "output_type": "pil",
        }
        if self.guidance_scale is not None:
            call["guidance_scale"] = self.guidance_scale
        try:
            with torch.inference_mode():
                output = pipe(**call)
        except _Cancelled:
            raise
        except Exception as exc:
            raise MediaGenerationError(
                f"the diffusers pipeline failed: {type(exc).__name__}: {exc}",
                code="generation_failed",
            ) from exc
        image = output.images[0]
        data = png_bytes(image)
        run["seconds"] = time.perf_counter() - began
        info = {
            "generator": self.name,
            "model": self.model_path.name,
            "pipeline": type(pipe).__name__,
            "device": self._torch_device,
            "dtype": self._dtype,
            "steps": run["steps_done"],
            "seed": seed,
            "width": image.width,
            "height": image.height,
        }
        if self.guidance_scale is not None:
            info["guidance_scale"] = self.guidance_scale
        return data, info

    # -- ImageGenerator ------------------------------------------------------

    async def start(self) -> None:
        """Load the pipeline now (it takes seconds to minutes for real weights)."""
        await asyncio.get_running_loop().run_in_executor(self._pool(), self._ensure_loaded)

    async def generate(
        self, request: MediaRequest, progress: Progress = no_progress
    ) -> GeneratedMedia:
        """Run the pipeline for ``request``: progress per denoising step, PNG out.

        Width and height are rounded to multiples of 8 (the VAE's scale);
        ``seed`` None draws one, reported in ``meta`` to reproduce the image.
        """
        check_request(request, self.capabilities)
        steps = request.steps or self.default_steps
        width, height = round_to(request.width, 8), round_to(request.height, 8)
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        cancel = threading.Event()
        reporter = ThreadProgress(progress)
        loop = asyncio.get_running_loop()
        self._running.add(cancel)
        try:
            data, info = await loop.run_in_executor(
                self._pool(), self._run, request, steps, width, height, seed, reporter, cancel
            )
        except BaseException:
            # Cancelled (or failed): the worker stops at its next step boundary.
            cancel.set()
            await reporter.aclose(deliver=False)
            raise
        finally:
            self._running.discard(cancel)
        await reporter.aclose()
        await progress(1.0, stage="done", step=info["steps"], steps=info["steps"])
        return GeneratedMedia(
            data=data, mime=PNG, width=info["width"], height=info["height"], meta=info
        )

    async def wait_idle(self) -> None:
        """Return once the worker has finished what it was given (a cancelled run stops at its next step)."""
        await asyncio.get_running_loop().run_in_executor(self._pool(), lambda: None)

    async def close(self) -> None:
        """Stop running generations at their next step and release the pipeline."""
        for cancel in list(self._running):
            cancel.set()
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        pipe, self._pipe = self._pipe, None
        if pipe is not None and self._torch_device.startswith("cuda"):
            import torch

            del pipe
            torch.cuda.empty_cache()
