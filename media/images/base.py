"""Image generator base: a prompt (and a persona's look) in, one PNG out.

One small base, one module per implementation (:mod:`media.images.procedural`,
the embedded default; :mod:`media.images.diffusers_image`;
:mod:`media.images.openai_images`), chosen by configuration through
:mod:`media.images.registry`. Every generator returns ``image/png`` whatever
its engine makes, so the NSFW check (:mod:`media.safety`) and storage see
one format.

Also here: the small helpers the implementations share, size checks and
:class:`ThreadProgress`, which carries progress from a worker thread to the
event loop without making the worker wait.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

from media.generation import (
    GeneratedMedia,
    GeneratorCapabilities,
    MediaGenerationError,
    MediaGenerator,
    MediaRequest,
    Progress,
    no_progress,
)

log = logging.getLogger(__name__)

PNG = "image/png"
EXTRA_HINT = "pip install 'salon[images]'"
MIN_SIDE = 64


class ImageGenerator(MediaGenerator):
    """Generate one still image for a :class:`~media.generation.MediaRequest` (``kind="image"``).

    ``generate`` returns a :class:`~media.generation.GeneratedMedia` with PNG
    bytes, ``mime="image/png"``, the pixel size and ``meta`` naming the
    generator, model, steps and seed (so a result can be reproduced).
    """

    name = "image"
    kind = "image"
    capabilities = GeneratorCapabilities(mimes=(PNG,))

    async def generate(
        self, request: MediaRequest, progress: Progress = no_progress
    ) -> GeneratedMedia:
        raise NotImplementedError


def check_request(request: MediaRequest, capabilities: GeneratorCapabilities) -> None:
    """Refuse what no image generator can make: another kind, an empty prompt, a bad size."""
    if request.kind != "image":
        raise MediaGenerationError(
            f"an image generator cannot make a {request.kind}", code="invalid_request"
        )
    if not request.prompt.strip():
        raise MediaGenerationError("the image prompt is empty", code="invalid_request")
    if not (MIN_SIDE <= request.width <= capabilities.max_width) or not (
        MIN_SIDE <= request.height <= capabilities.max_height
    ):
        raise MediaGenerationError(
            f"image size {request.width}x{request.height} is outside "
            f"{MIN_SIDE}..{capabilities.max_width} x {MIN_SIDE}..{capabilities.max_height}",
            code="invalid_request",
        )
    if request.steps is not None and request.steps < 1:
        raise MediaGenerationError("steps must be at least 1", code="invalid_request")


def round_to(value: int, multiple: int) -> int:
    """``value`` rounded to the nearest multiple of ``multiple`` (never below ``multiple``)."""
    return max(multiple, (value + multiple // 2) // multiple * multiple)


def png_bytes(image: Any, *, compress_level: int = 6, info: Any = None) -> bytes:
    """Encode a Pillow image as PNG (RGB or RGBA kept, anything else converted to RGB)."""
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level, pnginfo=info)
    return buffer.getvalue()


class ThreadProgress:
    """Report progress from a worker thread without ever making it wait.

    The worker calls :meth:`report` (a ``loop.call_soon_threadsafe`` that
    queues the values: microseconds, no thread hop it waits for); one task on
    the event loop awaits the async :data:`~media.generation.Progress`
    callback for each report, in order. A slow progress consumer (a database
    write per event) therefore never slows the diffusion steps down.
    :meth:`aclose` delivers what is queued, so every report reaches the
    consumer before the result is returned.

    Create it on the event loop (it starts its task there).
    """

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[float, dict[str, Any]] | None] = asyncio.Queue()
        self._task = self._loop.create_task(self._pump())
        self.failed: BaseException | None = None

    def report(self, fraction: float, **info: Any) -> None:
        """Queue a report; safe from any thread, returns at once."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (fraction, info))
        except RuntimeError:
            pass  # the loop is closed: nobody is listening any more

    async def _pump(self) -> None:
        while (item := await self._queue.get()) is not None:
            if self.failed is not None:
                continue  # the consumer broke: drop the rest rather than fail the image
            try:
                await self._progress(item[0], **item[1])
            except Exception as exc:
                # Progress is advisory (generation.Progress): a failing consumer
                # must not lose the image that is being made.
                self.failed = exc
                log.warning("image progress callback failed: %r", exc)

    async def aclose(self, *, deliver: bool = True) -> None:
        """Stop the pump: after delivering every queued report, or at once (``deliver=False``)."""
        if deliver and not self._task.done():
            # Reports queued by call_soon_threadsafe before the worker's result
            # was handed back run before this line, so the sentinel comes last.
            self._queue.put_nowait(None)
            await self._task
        else:
            # Not awaited: this runs while the caller is being cancelled, and
            # the pump holds nothing that needs cleaning up.
            self._task.cancel()
