"""The embedded default image generator: a persona-styled procedural illustration (Pillow).

What it is: a deterministic picture drawn from shapes and gradients. Its
palette comes from the persona's name and colour words in the persona's
attributes and the prompt; a few prompt words pick a motif (sun, moon,
stars, mountains, sea, trees, city, hearts, flowers); the persona's
initials sit in a medallion; a caption along the bottom says, in plain
words, that this is a procedural placeholder. The same request (or the same
``seed``) always gives the same PNG.

What it is not: an AI image model. It does not understand the prompt beyond
those keywords and it will not draw "the persona at the beach". It exists so
that ``salon serve`` with no weights and no keys still answers "show me ..."
with a real, persona-coloured image through the whole media pipeline (job,
progress, NSFW check, storage, signed URL). Point SALON_IMAGE_DIFFUSERS_MODEL
at a Stable Diffusion folder, or configure an OpenAI-compatible images API,
for real pictures (docs/media-images.md).

Drawing takes a few tens of milliseconds at 512x512; each stage runs in a
thread (``asyncio.to_thread``) and reports progress, and a cancelled task
stops between stages.
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import math
import random
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps
from PIL.PngImagePlugin import PngInfo

from media.generation import (
    GeneratedMedia,
    GeneratorCapabilities,
    MediaRequest,
    Progress,
    no_progress,
)
from media.images.base import PNG, ImageGenerator, check_request, png_bytes

RGB = tuple[int, int, int]
CAPTION = "Procedural placeholder - not an AI-generated image"
SHORT_CAPTION = "Placeholder"

# Colour words understood in persona attributes and prompts.
COLOURS: dict[str, RGB] = {
    "red": (200, 40, 50),
    "crimson": (170, 20, 50),
    "orange": (240, 130, 30),
    "amber": (255, 180, 40),
    "gold": (230, 180, 50),
    "golden": (230, 180, 50),
    "yellow": (245, 215, 60),
    "green": (50, 160, 80),
    "emerald": (30, 140, 90),
    "teal": (20, 140, 140),
    "cyan": (40, 200, 220),
    "blue": (40, 90, 200),
    "navy": (20, 30, 90),
    "purple": (120, 60, 170),
    "violet": (140, 80, 200),
    "lavender": (180, 160, 230),
    "pink": (240, 120, 170),
    "rose": (220, 90, 120),
    "brown": (120, 80, 50),
    "black": (20, 20, 25),
    "white": (240, 240, 235),
    "silver": (190, 195, 205),
    "grey": (128, 128, 135),
    "gray": (128, 128, 135),
}
# Moods: a hue (0..1), a saturation and a value the background leans towards.
MOODS: dict[str, tuple[float, float, float]] = {
    "night": (0.66, 0.6, 0.25),
    "dark": (0.70, 0.4, 0.2),
    "moon": (0.62, 0.45, 0.3),
    "space": (0.72, 0.7, 0.2),
    "sunset": (0.05, 0.75, 0.9),
    "sunrise": (0.09, 0.6, 0.95),
    "fire": (0.03, 0.9, 0.85),
    "desert": (0.10, 0.55, 0.9),
    "beach": (0.12, 0.4, 0.95),
    "ocean": (0.57, 0.7, 0.7),
    "sea": (0.56, 0.65, 0.7),
    "water": (0.55, 0.6, 0.75),
    "snow": (0.58, 0.12, 0.97),
    "winter": (0.60, 0.2, 0.9),
    "ice": (0.53, 0.3, 0.95),
    "forest": (0.33, 0.6, 0.45),
    "garden": (0.30, 0.5, 0.7),
    "nature": (0.28, 0.55, 0.6),
    "spring": (0.25, 0.45, 0.9),
    "autumn": (0.07, 0.7, 0.7),
    "city": (0.65, 0.3, 0.35),
    "love": (0.95, 0.55, 0.9),
}
# Motif words -> the motif drawn in front of the background.
MOTIFS: dict[str, str] = {
    "sun": "sun",
    "sunny": "sun",
    "sunset": "sun",
    "sunrise": "sun",
    "moon": "moon",
    "night": "stars",
    "star": "stars",
    "stars": "stars",
    "space": "stars",
    "sky": "stars",
    "mountain": "mountains",
    "mountains": "mountains",
    "hill": "mountains",
    "hills": "mountains",
    "sea": "waves",
    "ocean": "waves",
    "beach": "waves",
    "water": "waves",
    "lake": "waves",
    "river": "waves",
    "wave": "waves",
    "waves": "waves",
    "tree": "trees",
    "trees": "trees",
    "forest": "trees",
    "woods": "trees",
    "city": "city",
    "town": "city",
    "street": "city",
    "building": "city",
    "buildings": "city",
    "heart": "hearts",
    "hearts": "hearts",
    "love": "hearts",
    "flower": "flowers",
    "flowers": "flowers",
    "garden": "flowers",
    "rose": "flowers",
}
WORD = re.compile(r"[a-z]+")
# Glow strength by distance from its centre (a radial_gradient value, 181 = the rim).
_GLOW_CURVE = [int(150 * max(0.0, 1 - v / 181) ** 1.6) for v in range(256)]


@dataclass(frozen=True)
class Palette:
    """The colours of one picture: background from top to bottom, shapes, the medallion."""

    top: RGB
    bottom: RGB
    glow: RGB
    shapes: tuple[RGB, ...]
    accent: RGB
    ink: RGB  # text on the medallion


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (int(r * 255), int(g * 255), int(b * 255))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (
        int(a[0] + (b[0] - a[0]) * t),
        int(a[1] + (b[1] - a[1]) * t),
        int(a[2] + (b[2] - a[2]) * t),
    )


def _words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def make_palette(name: str, attributes: dict[str, str], prompt: str, rng: random.Random) -> Palette:
    """Colours from the persona (its name's hash, colour words in its attributes) and the prompt."""
    digest = hashlib.sha256(name.strip().lower().encode()).digest()
    hue = digest[0] / 255
    persona_words = _words(" ".join(attributes.values()))
    prompt_words = _words(prompt)
    persona_colours = [COLOURS[w] for w in persona_words if w in COLOURS]
    prompt_colours = [COLOURS[w] for w in prompt_words if w in COLOURS]
    moods = [MOODS[w] for w in prompt_words if w in MOODS]
    sat, val = 0.55 + digest[1] / 1275, 0.75
    if moods:
        # The prompt's first mood sets the scene (hues do not average: sunset
        # and sea would make green); the persona's hue still tints it.
        m_hue, sat, val = moods[0]
        hue = m_hue + (hue - 0.5) * 0.12
    top = _hsv(hue + 0.04, sat * 0.9, val * 0.75)
    bottom = _hsv(hue - 0.05, sat, min(1.0, val * 1.1))
    if len(moods) > 1:  # a second mood colours the lower half
        bottom = _mix(bottom, _hsv(*moods[1]), 0.5)
    if prompt_colours:
        bottom = _mix(bottom, prompt_colours[0], 0.55)
    accent = persona_colours[0] if persona_colours else _hsv(hue + 0.5, 0.65, 0.9)
    shapes = [accent, *persona_colours[1:3], *prompt_colours[:2]]
    while len(shapes) < 5:
        shapes.append(
            _hsv(hue + rng.uniform(-0.18, 0.18), rng.uniform(0.3, 0.8), rng.uniform(0.5, 1))
        )
    glow = _mix(_hsv(hue + 0.08, sat * 0.4, 1.0), (255, 255, 255), 0.3)
    luminance = 0.299 * accent[0] + 0.587 * accent[1] + 0.114 * accent[2]
    ink = (25, 25, 30) if luminance > 150 else (250, 250, 245)
    return Palette(top, bottom, glow, tuple(shapes), accent, ink)


def drawable(text: str) -> str:
    """``text`` as the bundled font can draw it: accents folded ("Zoë" -> "Zoe"), other scripts dropped.

    Pillow's bundled font covers ASCII only; a host font would draw more but
    make the picture depend on the machine, and the same request must give
    the same PNG everywhere.
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join(folded.split())


def initials(name: str) -> str:
    """Up to two initials of a name ("Ada Lovelace" -> "AL"); "?" for no name."""
    parts = [p for p in re.split(r"[\s_\-.]+", name.strip()) if p]
    letters = "".join(p[0] for p in parts[:2] if p[0].isalnum())
    return letters.upper() or "?"


def request_seed(request: MediaRequest) -> int:
    """The request's seed, or one derived from what it asks (the same request, the same image)."""
    if request.seed is not None:
        return int(request.seed)
    persona = request.persona
    key = "\x1f".join(
        [persona.name, *sorted(f"{k}={v}" for k, v in persona.attributes.items()), request.prompt]
    )
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font (FreeType): no font files to find on the host.
    return ImageFont.load_default(size=max(8, size))


class _Canvas:
    """The picture being drawn, one stage at a time (each stage runs in a worker thread)."""

    def __init__(self, request: MediaRequest, seed: int) -> None:
        self.request = request
        self.width, self.height = request.width, request.height
        self.scale = min(self.width, self.height)
        self.rng = random.Random(seed)
        persona = request.persona
        self.palette = make_palette(persona.name, persona.attributes, request.prompt, self.rng)
        words = _words(request.prompt)
        motifs = [MOTIFS[w] for w in words if w in MOTIFS]
        # At most two motifs, in the prompt's order, without repeats.
        self.motifs = list(dict.fromkeys(motifs))[:2]
        self.image = Image.new("RGB", (self.width, self.height))

    def background(self) -> None:
        p = self.palette
        gradient = Image.linear_gradient("L").resize((self.width, self.height))
        base = ImageOps.colorize(gradient, black=p.top, white=p.bottom)
        # radial_gradient is 0 at the centre and 181 on the inscribed circle:
        # a soft disc that fades to exactly 0 there, so no edge shows.
        size = int(self.scale * 1.4)
        disc = Image.radial_gradient("L").point(_GLOW_CURVE).resize((size, size))
        # Off-centre, seeded: pictures of one persona still vary.
        cx = int(self.rng.uniform(0.25, 0.75) * self.width)
        cy = int(self.rng.uniform(0.15, 0.5) * self.height)
        glow_mask = Image.new("L", base.size, 0)
        glow_mask.paste(disc, (cx - size // 2, cy - size // 2))
        self.image = Image.composite(Image.new("RGB", base.size, p.glow), base, glow_mask)

    def shapes(self) -> None:
        # Drawn with alpha straight onto the background, then the whole is
        # blurred: soft light behind a sharp motif, with no dark fringes (a
        # blurred transparent layer would bleed its black into the edges).
        draw = ImageDraw.Draw(self.image, "RGBA")
        for _ in range(self.rng.randint(7, 12)):
            colour = self.rng.choice(self.palette.shapes)
            alpha = self.rng.randint(50, 120)
            cx = self.rng.uniform(-0.1, 1.1) * self.width
            cy = self.rng.uniform(-0.1, 1.1) * self.height
            r = self.rng.uniform(0.08, 0.3) * self.scale
            if self.rng.random() < 0.6:
                draw.ellipse((cx - r, cy - r * 0.8, cx + r, cy + r * 0.8), fill=(*colour, alpha))
            else:
                sides = self.rng.randint(3, 6)
                turn = self.rng.uniform(0, math.tau)
                points = [
                    (
                        cx + r * math.cos(turn + i * math.tau / sides),
                        cy + r * math.sin(turn + i * math.tau / sides),
                    )
                    for i in range(sides)
                ]
                draw.polygon(points, fill=(*colour, alpha))
        self.image = self.image.filter(ImageFilter.GaussianBlur(self.scale / 40))

    def motif(self) -> None:
        layer = Image.new("RGBA", self.image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        for name in self.motifs or ["rings"]:
            _MOTIF_DRAWERS[name](self, draw)
        self.image = Image.alpha_composite(self.image.convert("RGBA"), layer).convert("RGB")

    def portrait(self) -> None:
        draw = ImageDraw.Draw(self.image)
        p, s = self.palette, self.scale
        r = s * 0.17
        cx, cy = self.width / 2, self.height * 0.45
        rim = r + s * 0.012
        draw.ellipse((cx - rim, cy - rim, cx + rim, cy + rim), fill=p.ink)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=p.accent)
        draw.text(
            (cx, cy),
            initials(drawable(self.request.persona.name)),
            fill=p.ink,
            font=_font(int(r * 0.9)),
            anchor="mm",
        )
        name = drawable(self.request.persona.name)
        if name:
            font = _font(int(s * 0.055))
            box = draw.textbbox((cx, cy + r + s * 0.06), name[:40], font=font, anchor="mm")
            pad = s * 0.015
            draw.rounded_rectangle(
                (box[0] - pad * 2, box[1] - pad, box[2] + pad * 2, box[3] + pad),
                radius=pad * 2,
                fill=(20, 20, 28),
            )
            draw.text(
                (cx, cy + r + s * 0.06), name[:40], fill=(245, 245, 240), font=font, anchor="mm"
            )

    def caption(self) -> None:
        # Honesty: the picture itself says what it is, wherever it is shown.
        band = max(14, int(self.scale * 0.06))
        overlay = Image.new("RGBA", self.image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        draw.rectangle((0, self.height - band, self.width, self.height), fill=(0, 0, 0, 150))
        font = _font(int(band * 0.5))
        # Narrow pictures get the short form rather than a clipped sentence.
        text = CAPTION if draw.textlength(CAPTION, font=font) < self.width * 0.96 else SHORT_CAPTION
        draw.text(
            (self.width / 2, self.height - band / 2),
            text,
            fill=(255, 255, 255, 235),
            font=font,
            anchor="mm",
        )
        self.image = Image.alpha_composite(self.image.convert("RGBA"), overlay).convert("RGB")

    def encode(self, seed: int) -> bytes:
        info = PngInfo()
        info.add_itxt("Software", "Salon procedural image generator")
        info.add_itxt("Description", f"{CAPTION}. Prompt: {self.request.prompt[:500]}")
        info.add_itxt("Seed", str(seed))
        # compress_level 3: PNG encoding is a third of the time at 6, files ~10% larger.
        return png_bytes(self.image, compress_level=3, info=info)


def _sun(c: _Canvas, draw: ImageDraw.ImageDraw) -> None:
    x, y, r = c.width * c.rng.uniform(0.65, 0.85), c.height * 0.2, c.scale * 0.09
    for i in range(5, 0, -1):
        draw.ellipse(
            (
                x - r * (1 + i * 0.25),
                y - r * (1 + i * 0.25),
                x + r * (1 + i * 0.25),
                y + r * (1 + i * 0.25),
            ),
            fill=(255, 230, 160, 18),
        )
    draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 225, 120, 240))


def _moon(c: _Canvas, draw: ImageDraw.ImageDraw) -> None:
    x, y, r = c.width * c.rng.uniform(0.15, 0.3), c.height * 0.18, c.scale * 0.07
    draw.ellipse((x - r * 1.6, y - r * 1.6, x + r * 1.6, y + r * 1.6), fill=(230, 235, 255, 25))
    draw.ellipse((x - r, y - r, x + r, y + r), fill=(240, 240, 225, 245))
    draw.ellipse(
        (x - r * 0.55, y - r * 1.05, x + r * 1.3, y + r * 0.75), fill=(*c.palette.top, 235)
    )


def _stars(c: _Canvas, draw: ImageDraw.ImageDraw) -> None:
    for _ in range(60):
        x, y = c.rng.uniform(0, c.width), c.rng.uniform(0, c.height * 0.6)
        r = c.rng.uniform(0.6, 2.2) * c.scale / 512
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 240, c.rng.randint(120, 255)))


def _mountains(c: _Canvas, draw: ImageDraw.ImageDraw) -> None:
    for layer, shade in ((0, 0.55), (1, 0.35)):
        base = c.height * (0.78 + layer * 0.08)
        points = [(0.0, float(c.height))]
        x = 0.0
        while x < c.width:
            points.append((x, base - c.rng.uniform(0.1, 0.3) * c.height))
            x += c.rng.uniform(0.12, 0.25) * c.width
            points.append((x, base - c.rng.uniform(0.0, 0.08) * c.height))
        points.append((float(c.width), float(c.height)))
        draw.polygon(points, fill=(*_mix(c.palette.top, (10, 10, 20), shade), 230))


def _waves(c: _Canvas, draw: ImageDraw.ImageDraw) -> None:
    colour = _mix(c.palette.bottom, (20, 60, 140), 0.5)
    for i in range(6):
        y0 = c.height * (0.72 + i * 0.045)
        phase, amp = c.rng.uniform(0, math.tau), c.scale * 0.012
        points = [
            (float(x), y0 + amp * math.sin(phase + x / (c.scale * 0.05)))
            for x in range(0, c.width + 8, 8)
        ]
        draw.polygon(
            [*points, (float(c.width), float(c.height)), (0.0, float(c.height))], fill=(*colour, 60)
        )
        draw.line(points, fill=(255, 255, 255, 90), width=max(1, int(c.scale / 256)))


def _trees(c: _Canvas, draw: ImageDraw.ImageDraw) -> None:
    green = _mix(c.palette.shapes[0], (20, 90, 40), 0.6)
    for _ in range(9):
        x = c.rng.uniform(0, c.width)
        h = c.rng.uniform(0.18, 0.32) * c.height
        w = h * 0.35
        base = c.height * c.rng.uniform(0.86, 0.95)
        draw.polygon([(x, base - h), (x - w, base), (x + w, base)], fill=(*green, 220))
        draw.rectangle((x - w * 0.12, base, x + w * 0.12, base + h * 0.12), fill=(70, 45, 30, 220))


def _city(c: _Canvas, draw: ImageDraw.ImageDraw) -> None:
    x = 0.0
    body = _mix(c.palette.top, (15, 15, 25), 0.6)
    while x < c.width:
        w = c.rng.uniform(0.06, 0.12) * c.width
        h = c.rng.uniform(0.15, 0.4) * c.height
        draw.rectangle((x, c.height - h, x + w, c.height), fill=(*body, 235))
        step = max(4.0, c.scale * 0.025)
        for wy in range(int(c.height - h + step), c.height - int(step), int(step * 1.6)):
            for wx in range(int(x + step * 0.5), int(x + w - step * 0.5), int(step * 1.4)):
                if c.rng.random() < 0.45:
                    draw.rectangle(
                        (wx, wy, wx + step * 0.5, wy + step * 0.6), fill=(255, 220, 120, 200)
                    )
        x += w + c.rng.uniform(0, 0.02) * c.width


def _heart(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, fill: tuple[int, ...]) -> None:
    draw.ellipse((x - r, y - r * 0.6, x, y + r * 0.4), fill=fill)
    draw.ellipse((x, y - r * 0.6, x + r, y + r * 0.4), fill=fill)
    draw.polygon([(x - r * 0.97, y), (x + r * 0.97, y), (x, y + r * 1.1)], fill=fill)


def _hearts(c: _Canvas, draw: ImageDraw.ImageDraw) -> None:
    for _ in range(7):
        r = c.rng.uniform(0.03, 0.07) * c.scale
        _heart(
            draw,
            c.rng.uniform(0, c.width),
            c.rng.uniform(0.1, 0.9) * c.height,
            r,
            (230, 60, 110, 170),
        )


def _flowers(c: _Canvas, draw: ImageDraw.ImageDraw) -> None:
    for _ in range(10):
        x, y = c.rng.uniform(0, c.width), c.rng.uniform(0.7, 0.97) * c.height
        r = c.rng.uniform(0.015, 0.03) * c.scale
        petal = c.rng.choice(c.palette.shapes)
        for k in range(5):
            a = k * math.tau / 5
            px, py = x + r * math.cos(a), y + r * math.sin(a)
            draw.ellipse(
                (px - r * 0.7, py - r * 0.7, px + r * 0.7, py + r * 0.7), fill=(*petal, 220)
            )
        draw.ellipse((x - r * 0.5, y - r * 0.5, x + r * 0.5, y + r * 0.5), fill=(250, 210, 60, 240))


def _rings(c: _Canvas, draw: ImageDraw.ImageDraw) -> None:
    # No motif word in the prompt: concentric rings around the medallion.
    cx, cy = c.width / 2, c.height * 0.45
    for i in range(1, 5):
        r = c.scale * (0.2 + i * 0.06)
        draw.ellipse(
            (cx - r, cy - r, cx + r, cy + r),
            outline=(*c.palette.accent, 110 - i * 20),
            width=max(1, int(c.scale / 170)),
        )


_MOTIF_DRAWERS: dict[str, Callable[[_Canvas, ImageDraw.ImageDraw], None]] = {
    "sun": _sun,
    "moon": _moon,
    "stars": _stars,
    "mountains": _mountains,
    "waves": _waves,
    "trees": _trees,
    "city": _city,
    "hearts": _hearts,
    "flowers": _flowers,
    "rings": _rings,
}


class ProceduralImageGenerator(ImageGenerator):
    """The embedded default: a seeded, persona-styled procedural illustration (see the module docstring).

    Needs nothing but Pillow. ``meta["placeholder"]`` is true on every result
    so that clients can tell it from a generated picture.
    """

    name = "procedural"
    capabilities = GeneratorCapabilities(
        local=True, needs_weights=False, device="cpu", max_width=2048, max_height=2048, mimes=(PNG,)
    )

    async def generate(
        self, request: MediaRequest, progress: Progress = no_progress
    ) -> GeneratedMedia:
        """Draw the picture in stages (background, shapes, motif, portrait, caption, PNG)."""
        check_request(request, self.capabilities)
        seed = request_seed(request)
        canvas = await asyncio.to_thread(_Canvas, request, seed)
        stages: list[tuple[str, Callable[[], Any]]] = [
            ("background", canvas.background),
            ("shapes", canvas.shapes),
            ("motif", canvas.motif),
            ("portrait", canvas.portrait),
            ("caption", canvas.caption),
        ]
        total = len(stages) + 1
        for index, (stage, draw) in enumerate(stages):
            await progress(index / total, stage=stage, step=index, steps=total)
            await asyncio.to_thread(draw)
        await progress(len(stages) / total, stage="encode", step=len(stages), steps=total)
        data = await asyncio.to_thread(canvas.encode, seed)
        await progress(1.0, stage="done", step=total, steps=total)
        return GeneratedMedia(
            data=data,
            mime=PNG,
            width=request.width,
            height=request.height,
            meta={
                "generator": self.name,
                "model": "procedural",
                "placeholder": True,
                "seed": seed,
                "motifs": canvas.motifs,
                "steps": total,
            },
        )
