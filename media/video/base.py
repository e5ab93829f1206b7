"""The video generator base: a request becomes a short MP4 clip.

One small base, one module per implementation (:mod:`media.video.animated`,
the embedded default that animates the persona's picture, and
:mod:`media.video.diffusers_video`, image-to-video or text-to-video from a
local diffusers pipeline folder), chosen by configuration through
:mod:`media.video.registry`.

Every generator returns ``video/mp4``: H.264, yuv420p, even frame sizes and
the ``moov`` atom at the front ("faststart"), which is what every browser's
``<video>`` element plays, and plays while it downloads.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from media.generation import (
    GeneratorCapabilities,
    MediaGenerationError,
    MediaGenerator,
    MediaKind,
    MediaRequest,
)

if TYPE_CHECKING:
    from PIL import Image

VIDEO_MIME = "video/mp4"
INSTALL_HINT = "pip install 'salon[video]'"

# Bounds on any request, whatever the generator: a clip is a short reply in
# a chat, and a minute at 60 fps is already 3,600 frames to encode.
MIN_SIDE = 64
MAX_SECONDS = 60.0
MAX_FPS = 60
# A decoded input larger than this is refused rather than resized: 40 MP of
# RGB is 120 MB of memory before any work starts.
MAX_INPUT_PIXELS = 40_000_000
INPUT_FORMATS = ("PNG", "JPEG", "WEBP")


@dataclass(frozen=True)
class VideoPlan:
    """A request resolved into what will be encoded: even sizes, a frame count."""

    width: int
    height: int
    fps: int
    frames: int

    @property
    def seconds(self) -> float:
        """The clip's duration (``frames / fps``)."""
        return self.frames / self.fps


def plan_video(
    request: MediaRequest,
    capabilities: GeneratorCapabilities,
    *,
    max_seconds: float = MAX_SECONDS,
) -> VideoPlan:
    """Check a request's size and timing and round the size down to even numbers.

    H.264 in yuv420p stores colour at half resolution, so odd sizes cannot be
    encoded; rounding down (rather than failing) keeps a 513-pixel request
    usable. Anything outside the bounds is an ``invalid_request``.
    """
    width, height = int(request.width), int(request.height)
    if not (MIN_SIDE <= width <= capabilities.max_width):
        raise MediaGenerationError(
            f"width must be {MIN_SIDE}..{capabilities.max_width} pixels, got {width}",
            code="invalid_request",
        )
    if not (MIN_SIDE <= height <= capabilities.max_height):
        raise MediaGenerationError(
            f"height must be {MIN_SIDE}..{capabilities.max_height} pixels, got {height}",
            code="invalid_request",
        )
    fps = int(request.fps)
    if not (1 <= fps <= MAX_FPS):
        raise MediaGenerationError(f"fps must be 1..{MAX_FPS}, got {fps}", code="invalid_request")
    seconds = float(request.seconds)
    if not (0 < seconds <= max_seconds):
        raise MediaGenerationError(
            f"seconds must be more than 0 and at most {max_seconds:g}, got {seconds:g}",
            code="invalid_request",
        )
    frames = max(1, round(seconds * fps))
    return VideoPlan(width=width - width % 2, height=height - height % 2, fps=fps, frames=frames)


def decode_image(data: bytes) -> Image.Image:
    """An input picture (PNG, JPEG or WebP bytes) as upright RGB, or ``invalid_request``.

    Transparent pictures are laid on a dark backdrop, since video has no alpha.
    """
    from PIL import Image, ImageOps

    image: Image.Image
    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in INPUT_FORMATS:
            raise MediaGenerationError(
                f"the input image must be PNG or JPEG, got {image.format or 'unknown'}",
                code="invalid_request",
            )
        if image.width * image.height > MAX_INPUT_PIXELS:
            raise MediaGenerationError(
                f"the input image is too large ({image.width}x{image.height})",
                code="invalid_request",
            )
        image.load()
    except MediaGenerationError:
        raise
    except Exception as exc:
        raise MediaGenerationError(
            f"the input image cannot be read: {exc}", code="invalid_request"
        ) from exc
    image = ImageOps.exif_transpose(image)  # phone photos are stored sideways
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        backdrop = Image.new("RGBA", image.size, (24, 24, 28, 255))
        image = Image.alpha_composite(backdrop, image)
    return image.convert("RGB")


class VideoGenerator(MediaGenerator):
    """Base of the video generators: ``generate`` returns an MP4 (:data:`VIDEO_MIME`).

    Implementations report progress per diffusion step and per encoded
    frame, run their work in a thread (:func:`media.worker.run_in_thread`)
    and stop between frames or steps when their task is cancelled.
    """

    name = "video"
    kind: MediaKind = "video"
    capabilities = GeneratorCapabilities(mimes=(VIDEO_MIME,))
