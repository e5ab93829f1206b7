"""The embedded video generator: the persona's picture, gently animated, as an MP4.

No package carries video diffusion weights, so the default that runs on any
machine does what a slideshow editor does with a still photo: a slow zoom
and pan across it (the "Ken Burns" effect), a faint periodic scale that
reads as breathing, and an optional fade in from black. It does not invent
motion that is not in the picture, and it does not draw the prompt; with a
diffusers model folder configured, :mod:`media.video.diffusers_video` does.

The picture is ``request.image`` (the caller passes the persona's latest
image or a freshly generated one), else ``request.persona.image``, else a
placeholder card drawn here from the persona's name. The motion is chosen
from the seed, so the same request and seed give the same file.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from media.generation import (
    GeneratedMedia,
    GeneratorCapabilities,
    MediaGenerationError,
    MediaRequest,
    PersonaLook,
    Progress,
    no_progress,
)
from media.video.base import VIDEO_MIME, VideoGenerator, VideoPlan, decode_image, plan_video
from media.video.encode import encode_mp4
from media.worker import StepReporter, run_in_thread

# The camera never shows less than the whole zoomed-in crop: zooms start at
# ZOOM_MIN > 1 + BREATH so the breathing scale never needs pixels outside
# the picture.
ZOOM_MIN, ZOOM_MAX = 1.04, 1.22
BREATH = 0.012  # +-1.2 % scale: visible as life, not as a zoom
BREATH_PERIOD = (3.2, 4.4)  # seconds per breath, about a resting adult's rate
DEFAULT_FADE_IN = 0.4  # seconds; options["fade_in"] = 0 turns it off


def _seed_of(request: MediaRequest) -> int:
    if request.seed is not None:
        return int(request.seed) & 0xFFFFFFFF
    return random.SystemRandom().getrandbits(32)


def placeholder_card(persona: PersonaLook, width: int, height: int, seed: int) -> Image.Image:
    """A simple card (colour gradient, silhouette, initials, name) when no picture is given."""
    digest = hashlib.sha256(f"{persona.name}\0{seed}".encode()).digest()
    hue = digest[0] / 255.0
    top = _hsv(hue, 0.45, 0.55)
    bottom = _hsv((hue + 0.08) % 1.0, 0.55, 0.22)
    card = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(card)
    for y in range(height):
        t = y / max(1, height - 1)
        draw.line(
            [(0, y), (width, y)],
            fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    light = _hsv(hue, 0.2, 0.9)
    side = min(width, height)
    cx, head_y, r = width / 2, height * 0.42, side * 0.16
    draw.ellipse([cx - r, head_y - r, cx + r, head_y + r], fill=light)
    draw.ellipse([cx - 2.2 * r, head_y + 1.25 * r, cx + 2.2 * r, head_y + 4.6 * r], fill=light)
    initials = "".join(word[0] for word in persona.name.split()[:2]).upper() or "?"
    font = ImageFont.load_default(size=max(10, round(r * 0.9)))
    draw.text((cx, head_y), initials, fill=bottom, font=font, anchor="mm")
    if persona.name:
        name_font = ImageFont.load_default(size=max(10, round(side * 0.06)))
        draw.text(
            (cx, height * 0.9),
            persona.name[:40],
            fill=(245, 245, 245),
            font=name_font,
            anchor="mm",
            stroke_width=max(1, round(side * 0.006)),  # readable over the silhouette too
            stroke_fill=bottom,
        )
    return card


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _smooth(t: float) -> float:
    """Ease in and out, so the camera does not start or stop with a jolt."""
    return t * t * (3 - 2 * t)


class _Motion:
    """One clip's camera path over a source picture, chosen from the seed."""

    def __init__(self, source: Image.Image, plan: VideoPlan, rng: random.Random) -> None:
        self.plan = plan
        src_w, src_h = source.size
        aspect = plan.width / plan.height
        # The largest crop of the output's aspect ratio that fits the source.
        if src_w / src_h > aspect:
            self.base_w, self.base_h = src_h * aspect, float(src_h)
        else:
            self.base_w, self.base_h = float(src_w), src_w / aspect
        self.src_w, self.src_h = src_w, src_h
        zoom_a = rng.uniform(ZOOM_MIN, ZOOM_MIN + 0.04)
        zoom_b = rng.uniform(ZOOM_MAX - 0.08, ZOOM_MAX)
        self.zoom_from, self.zoom_to = (zoom_a, zoom_b) if rng.random() < 0.6 else (zoom_b, zoom_a)
        # Pan targets as a fraction of the free margin; portraits keep the face
        # (upper middle) in frame, so vertical travel is smaller and biased up.
        self.pan_from = (rng.uniform(-0.8, 0.8), rng.uniform(-0.6, 0.2))
        self.pan_to = (rng.uniform(-0.8, 0.8), rng.uniform(-0.6, 0.2))
        self.breath_period = rng.uniform(*BREATH_PERIOD)
        self.breath_phase = rng.uniform(0, 2 * math.pi)

    def box(self, index: int) -> tuple[float, float, float, float]:
        """The source rectangle that frame ``index`` shows."""
        t = index / max(1, self.plan.frames - 1)
        e = _smooth(t)
        seconds = index / self.plan.fps
        breath = 1 + BREATH * math.sin(
            2 * math.pi * seconds / self.breath_period + self.breath_phase
        )
        zoom = (self.zoom_from + (self.zoom_to - self.zoom_from) * e) * breath
        crop_w, crop_h = self.base_w / zoom, self.base_h / zoom
        px = self.pan_from[0] + (self.pan_to[0] - self.pan_from[0]) * e
        py = self.pan_from[1] + (self.pan_to[1] - self.pan_from[1]) * e
        cx = self.src_w / 2 + px * (self.src_w - crop_w) / 2
        cy = self.src_h / 2 + py * (self.src_h - crop_h) / 2
        # Clamped: float rounding must not step outside the picture (Pillow refuses).
        x0, y0 = max(0.0, cx - crop_w / 2), max(0.0, cy - crop_h / 2)
        return (x0, y0, min(self.src_w, x0 + crop_w), min(self.src_h, y0 + crop_h))


def _working_copy(source: Image.Image, plan: VideoPlan) -> Image.Image:
    """Downscale a large source once, so each frame resamples only what it shows."""
    need = max(plan.width / source.width, plan.height / source.height) * ZOOM_MAX * 1.1
    if need >= 1:
        return source
    size = (max(1, round(source.width * need)), max(1, round(source.height * need)))
    return source.resize(size, Image.Resampling.LANCZOS)


class AnimatedPortraitGenerator(VideoGenerator):
    """Animate a still picture (Ken Burns zoom/pan, breathing, fade-in) into an MP4.

    ``options``: ``fade_in`` (seconds, default 0.4, 0 = none). Progress is
    reported once per encoded frame (``frame``, ``frames``).
    """

    name = "animated"
    capabilities = GeneratorCapabilities(
        local=True, needs_weights=False, device="cpu", max_width=2048, max_height=2048,
        mimes=(VIDEO_MIME,),
    )  # fmt: skip

    async def generate(
        self, request: MediaRequest, progress: Progress = no_progress
    ) -> GeneratedMedia:
        """Animate ``request.image`` (or the persona's image, or a placeholder card)."""
        plan = plan_video(request, self.capabilities)
        fade_in = _fade_seconds(request.options)
        seed = _seed_of(request)
        picture = request.image or request.persona.image

        def work(reporter: StepReporter) -> bytes:
            if picture is not None:
                source = decode_image(picture)
            else:
                # Drawn larger than the frame so the zoom does not blur it.
                source = placeholder_card(
                    request.persona,
                    round(plan.width * ZOOM_MAX),
                    round(plan.height * ZOOM_MAX),
                    seed,
                )
            reporter.check()
            return encode_mp4(
                _frames(source, plan, random.Random(seed), fade_in),
                width=plan.width,
                height=plan.height,
                fps=plan.fps,
                count=plan.frames,
                report=reporter.report,
            )

        data = await run_in_thread(work, progress)
        return GeneratedMedia(
            data=data,
            mime=VIDEO_MIME,
            width=plan.width,
            height=plan.height,
            seconds=plan.seconds,
            meta={
                "generator": self.name,
                "seed": seed,
                "fps": plan.fps,
                "frames": plan.frames,
                "source": "image" if picture is not None else "placeholder",
                "codec": "h264",
            },
        )


def _fade_seconds(options: dict[str, Any]) -> float:
    value = options.get("fade_in", DEFAULT_FADE_IN)
    try:
        fade = float(value)
    except (TypeError, ValueError) as exc:
        raise MediaGenerationError(
            f"fade_in must be a number of seconds, got {value!r}", code="invalid_request"
        ) from exc
    if not (0 <= fade <= 10):
        raise MediaGenerationError("fade_in must be 0..10 seconds", code="invalid_request")
    return fade


def _frames(
    source: Image.Image, plan: VideoPlan, rng: random.Random, fade_in: float
) -> Iterator[bytes]:
    """The clip's frames as rgb24 bytes, drawn one at a time as the encoder asks."""
    motion = _Motion(source, plan, rng)
    work = _working_copy(source, plan)
    scale_x, scale_y = work.width / source.width, work.height / source.height
    black = Image.new("RGB", (plan.width, plan.height))
    for index in range(plan.frames):
        x0, y0, x1, y1 = motion.box(index)
        frame = work.resize(
            (plan.width, plan.height),
            Image.Resampling.BICUBIC,
            box=(x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y),
        )
        seconds = index / plan.fps
        if fade_in > 0 and seconds < fade_in:
            frame = Image.blend(black, frame, _smooth(seconds / fade_in))
        yield frame.tobytes()
