"""Frames to a browser-playable MP4 with imageio-ffmpeg's writer.

The ffmpeg binary ships inside the ``imageio-ffmpeg`` wheel (with libx264),
so encoding needs no system package. Output: H.264 High profile, yuv420p,
``+faststart`` (the index at the front, so a browser starts playing before
the download ends). ffmpeg needs a seekable file to move the index, hence a
temporary file rather than a pipe.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from media.generation import MediaGenerationError
from media.video.base import INSTALL_HINT

# x264's CRF 20 is visually clean for portraits at chat sizes; "veryfast"
# keeps a 3-second 512x512 clip well under a second on one core.
CRF = 20
PRESET = "veryfast"


class _Abort(BaseException):
    """Thrown into the writer on cancel: a BaseException makes it kill ffmpeg
    instead of waiting for it to finish a clip nobody will watch."""


def ffmpeg_exe() -> str:
    """The bundled ffmpeg binary; ``generator_unavailable`` names the extra if missing."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise MediaGenerationError(
            f"video encoding needs imageio-ffmpeg: {INSTALL_HINT}", code="generator_unavailable"
        ) from exc
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def encode_mp4(
    frames: Iterable[bytes],
    *,
    width: int,
    height: int,
    fps: float,
    count: int,
    report: Callable[..., None] | None = None,
) -> bytes:
    """Encode ``count`` frames (``rgb24`` bytes, ``width * height * 3`` each) into MP4 bytes.

    ``report(fraction, frame=i, frames=count)`` is called after each frame
    is handed to the encoder (the frame source runs in the same loop, so the
    fraction covers drawing and encoding); it may raise to stop, which kills
    ffmpeg and writes nothing.
    """
    if width % 2 or height % 2:
        raise MediaGenerationError(
            f"H.264 (yuv420p) needs even sizes, got {width}x{height}", code="invalid_request"
        )
    frame_bytes = width * height * 3
    ffmpeg_exe()  # fail early, with the extra's name, when the package is missing
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory(prefix="salon-video-") as tmp:
        path = Path(tmp) / "clip.mp4"
        writer = imageio_ffmpeg.write_frames(
            str(path),
            (width, height),
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=None,  # CRF below instead of imageio's 0..10 scale
            macro_block_size=2,  # even sizes are enough for yuv420p; no silent rescale
            ffmpeg_log_level="error",
            output_params=[
                "-preset",
                PRESET,
                "-crf",
                str(CRF),
                "-profile:v",
                "high",
                "-movflags",
                "+faststart",
                # No encoder/date tags: the same frames give the same bytes.
                "-map_metadata",
                "-1",
                "-fflags",
                "+bitexact",
                "-flags:v",
                "+bitexact",
            ],
        )
        writer.send(None)  # start ffmpeg
        written = 0
        try:
            for frame in frames:
                if len(frame) != frame_bytes:
                    raise MediaGenerationError(
                        f"frame {written} has {len(frame)} bytes, expected {frame_bytes}"
                    )
                writer.send(frame)
                written += 1
                if report is not None:
                    report(written / count, frame=written, frames=count)
                if written >= count:
                    break
        except BaseException:
            try:
                writer.throw(_Abort)
            except _Abort:
                pass
            raise
        writer.close()  # flushes, waits for ffmpeg to write the index
        if written == 0:
            raise MediaGenerationError("no frames to encode")
        data = path.read_bytes() if path.exists() else b""
    # write_frames does not check ffmpeg's exit status: check what it left.
    if len(data) < 64 or data[4:8] != b"ftyp":
        raise MediaGenerationError("ffmpeg did not produce an MP4 file")
    return data
