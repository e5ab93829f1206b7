"""The embedded avatar builder: a stylized waist-up figure as a GLB, from the persona.

No package ships a rigged human model with a permissive licence, so the
default builds one from trimesh primitives: torso and shoulders, arms and
hands, neck, head, eyes (white, iris, pupil), brows, nose, ears, lips on a
hinged jaw, a hair cap in one of four styles, and glasses when the persona
wears them. It is a friendly placeholder in the spirit of a game's default
character, not a likeness.

Colours and proportions come from the persona's attributes when they say
so ("long red hair", "green eyes", "olive skin", "blue hoodie", "tall",
"glasses", a ``#rrggbb`` colour) and otherwise from a hash of the name and
attributes, so a persona always gets the same avatar and two personas
rarely get the same one. Two clips animate nodes directly (no skinning):
``idle`` (breathing, a slow head sway, a blink) and ``talk`` (jaw and head).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import asdict, dataclass
from typing import Any

from media.avatar.base import CLIPS, GLB_MIME, INSTALL_HINT, AvatarBuilder
from media.generation import (
    GeneratedMedia,
    GeneratorCapabilities,
    MediaGenerationError,
    MediaRequest,
    PersonaLook,
    Progress,
    no_progress,
)
from media.worker import StepReporter, run_in_thread

RGB = tuple[float, float, float]

_HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 24, 22), "dark": (40, 30, 25), "brown": (92, 58, 33),
    "brunette": (82, 50, 30), "chestnut": (110, 55, 30), "blonde": (226, 196, 120),
    "blond": (226, 196, 120), "golden": (212, 170, 80), "red": (165, 52, 30),
    "auburn": (130, 50, 30), "ginger": (190, 85, 40), "copper": (184, 92, 50),
    "white": (235, 235, 230), "grey": (150, 150, 150), "gray": (150, 150, 150),
    "silver": (192, 192, 200), "pink": (235, 130, 170), "blue": (60, 100, 200),
    "green": (60, 160, 90), "purple": (120, 70, 170), "violet": (140, 90, 200),
    "teal": (40, 150, 150), "orange": (230, 120, 40), "yellow": (235, 210, 70),
    "hazel": (140, 110, 60), "amber": (200, 140, 40),
}  # fmt: skip
_SKIN_TONES: dict[str, tuple[int, int, int]] = {
    "pale": (245, 222, 205), "fair": (240, 208, 184), "light": (234, 196, 165),
    "olive": (198, 160, 118), "tan": (196, 144, 104), "tanned": (196, 144, 104),
    "brown": (141, 94, 62), "dark": (98, 62, 42), "deep": (82, 52, 36), "ebony": (70, 45, 32),
}  # fmt: skip
_CLOTHES = ("shirt", "dress", "jacket", "hoodie", "sweater", "coat", "suit", "top", "robe",
            "uniform", "blouse", "tunic", "cardigan", "jumper", "vest", "clothes")  # fmt: skip
_HEX = re.compile(r"#([0-9a-f]{6})\b")

# Clip timing: a resting breath every 4 s; speech at about six syllables a second.
IDLE_SECONDS, IDLE_KEYS = 4.0, 32
TALK_SECONDS, TALK_FPS = 2.0, 12


@dataclass(frozen=True)
class AvatarLook:
    """What the builder decided from the persona: colours (sRGB 0..1), shape, style."""

    skin: RGB
    hair: RGB
    eyes: RGB
    clothing: RGB
    lips: RGB
    hair_style: str  # short, long, bun, bald
    glasses: bool
    height: float  # ~0.94..1.06
    build: float  # shoulder width factor, ~0.9..1.12
    head: float  # head size factor


def _rgb(value: tuple[int, int, int]) -> RGB:
    return (value[0] / 255, value[1] / 255, value[2] / 255)


def _colour_near(text: str, nouns: tuple[str, ...], table: dict[str, Any]) -> Any:
    """The colour word closest before one of ``nouns`` ("long wavy red hair" -> red)."""
    for match in re.finditer(r"\b(" + "|".join(nouns) + r")\b", text):
        before = re.findall(r"[a-z]+", text[max(0, match.start() - 40) : match.start()])[-3:]
        for word in reversed(before):
            if word in table:
                return table[word]
        after = re.findall(r"[a-z]+", text[match.end() : match.end() + 20])[:2]
        if after and after[0] in ("is", "are") and len(after) > 1 and after[1] in table:
            return table[after[1]]  # "hair is red"
    return None


def _colour_in_field(
    attributes: dict[str, str], nouns: tuple[str, ...], table: dict[str, Any]
) -> Any:
    """``{"hair": "short black"}``: a field named after the part gives its colour directly."""
    for key, value in sorted(attributes.items()):
        if any(noun in key.lower() for noun in nouns):
            for word in re.findall(r"[a-z]+", value.lower()):
                if word in table:
                    return table[word]
    return None


def look_for(persona: PersonaLook, seed: int | None = None) -> AvatarLook:
    """Decide colours, proportions and style from the persona (deterministic)."""
    attributes = persona.attributes
    # "hair: red" and "appearance: red hair" read the same once joined.
    text = " ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(attributes.items())).lower()
    key = "\0".join([persona.name, *(f"{k}={v}" for k, v in sorted(attributes.items()))])
    digest = hashlib.sha256(f"{key}\0{seed if seed is not None else ''}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))

    hair = _colour_in_field(attributes, ("hair", "haired"), _HAIR_COLOURS) or _colour_near(
        text, ("hair", "haired"), _HAIR_COLOURS
    )
    eyes = _colour_in_field(attributes, ("eyes", "eyed"), _HAIR_COLOURS) or _colour_near(
        text, ("eyes", "eyed"), _HAIR_COLOURS
    )
    skin = _colour_in_field(
        attributes, ("skin", "skinned", "complexion"), _SKIN_TONES
    ) or _colour_near(text, ("skin", "skinned", "complexion"), _SKIN_TONES)
    clothing = _colour_in_field(attributes, _CLOTHES, _HAIR_COLOURS) or _colour_near(
        text, _CLOTHES, _HAIR_COLOURS
    )
    hexes = _HEX.findall(text)
    if clothing is None and hexes:
        clothing = tuple(int(hexes[0][i : i + 2], 16) for i in (0, 2, 4))
    palette = list(_HAIR_COLOURS.values())
    skin = skin or rng.choice(list(_SKIN_TONES.values()))
    if re.search(r"\bbald\b", text):
        style = "bald"
    elif re.search(r"\b(bun|ponytail)\b", text):
        style = "bun"
    elif re.search(r"\b(long|flowing)\b[^.,;]{0,20}\bhair\b", text):
        style = "long"
    elif re.search(r"\b(short|cropped|buzz)\b[^.,;]{0,20}\bhair\b", text):
        style = "short"
    else:
        style = rng.choice(("short", "short", "long", "bun"))
    height = 1.0 + rng.uniform(-0.03, 0.03)
    if re.search(r"\btall\b", text):
        height = 1.06
    elif re.search(r"\b(petite|short)\b(?![^.,;]{0,20}\bhair\b)", text):
        height = 0.94
    build = 1.0 + rng.uniform(-0.05, 0.05)
    if re.search(r"\b(broad|muscular|stocky|burly)\b", text):
        build = 1.12
    elif re.search(r"\b(slim|slender|thin|petite|willowy)\b", text):
        build = 0.9
    skin_rgb = _rgb(skin)
    return AvatarLook(
        skin=skin_rgb,
        hair=_rgb(hair or rng.choice(palette[:12])),
        eyes=_rgb(eyes or rng.choice(palette)),
        clothing=_rgb(clothing or rng.choice(palette)),
        lips=(min(1.0, skin_rgb[0] * 0.85 + 0.1), skin_rgb[1] * 0.6, skin_rgb[2] * 0.6),
        hair_style=style,
        glasses=bool(re.search(r"(?<!no )(?<!without )\b(glasses|spectacles|eyeglasses)\b", text)),
        height=round(height, 4),
        build=round(build, 4),
        head=round(1.0 + rng.uniform(-0.04, 0.04), 4),
    )


def _quat(pitch: float = 0.0, yaw: float = 0.0, roll: float = 0.0) -> tuple[float, ...]:
    """Rotation about X (pitch), then Y (yaw), then Z (roll) as a glTF quaternion."""
    cx, sx = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    cz, sz = math.cos(roll / 2), math.sin(roll / 2)
    # q = qz * qy * qx
    w = cz * cy * cx + sz * sy * sx
    x = cz * cy * sx - sz * sy * cx
    y = cz * sy * cx + sz * cy * sx
    z = sz * cy * cx - cz * sy * sx
    return (round(x, 6), round(y, 6), round(z, 6), round(w, 6))


def _clips(names: list[str], look: AvatarLook, rng: random.Random) -> list[Any]:
    from media.avatar.gltf import Clip, Track

    clips: list[Clip] = []
    if "idle" in names:
        times = [IDLE_SECONDS * i / IDLE_KEYS for i in range(IDLE_KEYS + 1)]
        phase = rng.uniform(0, 2 * math.pi)
        breath = [(1 - math.cos(2 * math.pi * t / IDLE_SECONDS)) / 2 for t in times]
        sway = [math.sin(2 * math.pi * t / IDLE_SECONDS + phase) for t in times]
        drift = [math.sin(4 * math.pi * t / IDLE_SECONDS) for t in times]
        # A blink: eyes close and open over ~0.25 s, once per loop.
        blink_at = IDLE_SECONDS * rng.uniform(0.35, 0.7)
        blink_times = [0.0, blink_at, blink_at + 0.08, blink_at + 0.16, IDLE_SECONDS]
        blink = [(1, 1, 1), (1, 1, 1), (1, 0.1, 1), (1, 1, 1), (1, 1, 1)]
        clips.append(
            Clip(
                "idle",
                [
                    Track("body", "translation", times, [(0, 0.006 * b, 0) for b in breath]),
                    Track(
                        "chest",
                        "scale",
                        times,
                        [(1 + 0.012 * b, 1 + 0.018 * b, 1 + 0.03 * b) for b in breath],
                    ),
                    Track(
                        "head",
                        "rotation",
                        times,
                        [
                            _quat(0.02 * d, 0.07 * s, 0.025 * d)
                            for s, d in zip(sway, drift, strict=True)
                        ],
                    ),
                    Track("arm_l", "rotation", times, [_quat(roll=0.03 * b) for b in breath]),
                    Track("arm_r", "rotation", times, [_quat(roll=-0.03 * b) for b in breath]),
                    Track("eye_l", "scale", blink_times, blink),
                    Track("eye_r", "scale", blink_times, blink),
                ],
            )
        )
    if "talk" in names:
        keys = round(TALK_SECONDS * TALK_FPS)
        times = [TALK_SECONDS * i / keys for i in range(keys + 1)]
        # Syllables: open on even keys, nearly closed on odd ones; closed at both ends to loop.
        opening = [
            0.0 if i in (0, keys) else (rng.uniform(0.08, 0.2) if i % 2 else rng.uniform(0.0, 0.05))
            for i in range(keys + 1)
        ]
        nod = [math.sin(4 * math.pi * t / TALK_SECONDS) for t in times]
        turn = [math.sin(2 * math.pi * t / TALK_SECONDS) for t in times]
        clips.append(
            Clip(
                "talk",
                [
                    Track("jaw", "rotation", times, [_quat(pitch=a) for a in opening]),
                    Track(
                        "head",
                        "rotation",
                        times,
                        [_quat(0.035 * n, 0.05 * t, 0) for n, t in zip(nod, turn, strict=True)],
                    ),
                ],
            )
        )
    return clips


def _clip_names(options: dict[str, Any]) -> list[str]:
    names = options.get("animations", list(CLIPS))
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise MediaGenerationError(
            "options.animations must be a list of clip names", code="invalid_request"
        )
    unknown = sorted(set(names) - set(CLIPS))
    if unknown:
        raise MediaGenerationError(
            f"unknown animation clip(s) {', '.join(unknown)}; known: {', '.join(CLIPS)}",
            code="invalid_request",
        )
    return [n for n in CLIPS if n in names]


class ProceduralAvatarBuilder(AvatarBuilder):
    """Build a stylized, animated waist-up figure (GLB) from a persona's name and attributes.

    Progress is reported per build stage: the look, each body part, the
    animation clips, the GLB export and its self-check.
    """

    name = "procedural"
    capabilities = GeneratorCapabilities(
        local=True, needs_weights=False, device="cpu", mimes=(GLB_MIME,)
    )

    async def generate(
        self, request: MediaRequest, progress: Progress = no_progress
    ) -> GeneratedMedia:
        """Build the persona's avatar; ``options["animations"]`` picks the clips."""
        clip_names = _clip_names(request.options)
        return await run_in_thread(
            lambda reporter: self._build(request, clip_names, reporter), progress
        )

    def _build(
        self, request: MediaRequest, clip_names: list[str], reporter: StepReporter
    ) -> GeneratedMedia:
        try:
            from media.avatar.figure import build_parts, materials_for
            from media.avatar.gltf import write_glb
        except ImportError as exc:
            raise MediaGenerationError(
                f"building avatars needs trimesh and pygltflib: {INSTALL_HINT}",
                code="generator_unavailable",
            ) from exc
        from media.avatar.importer import describe_glb

        look = look_for(request.persona, request.seed)
        reporter.report(0.05, stage="look")
        parts = build_parts(look, reporter.scaled(0.05, 0.7))
        materials = materials_for(look)
        key = hashlib.sha256(repr(asdict(look)).encode()).digest()
        clips = _clips(clip_names, look, random.Random(int.from_bytes(key[:8], "big")))
        reporter.report(0.8, stage="animations", clips=clip_names)
        data = write_glb(
            parts,
            materials,
            clips,
            generator="Salon procedural avatar",
            extras={"clips": clip_names, "style": look.hair_style},
        )
        reporter.report(0.95, stage="export", bytes=len(data))
        # Read our own file back as any importer would: a broken export fails here, not in a viewer.
        described = describe_glb(data)
        if described["animations"] != clip_names:
            raise MediaGenerationError("the exported avatar lost its animation clips")
        reporter.report(1.0, stage="done")
        return GeneratedMedia(
            data=data,
            mime=GLB_MIME,
            meta={
                "generator": self.name,
                "format": "glb",
                "extension": ".glb",
                "seed": request.seed,
                "nodes": described["nodes"],
                "meshes": described["meshes"],
                "materials": described["materials"],
                "animations": clip_names,
                "look": {
                    "hair_style": look.hair_style,
                    "glasses": look.glasses,
                    "skin": _hex(look.skin),
                    "hair": _hex(look.hair),
                    "eyes": _hex(look.eyes),
                    "clothing": _hex(look.clothing),
                },
            },
        )


def _hex(colour: RGB) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in colour)
