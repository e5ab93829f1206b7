"""What every media generator shares: the request, the result, progress and errors.

A generator turns a :class:`MediaRequest` into a :class:`GeneratedMedia` (bytes
plus MIME type), reporting real progress through a :data:`Progress` callback
(0..1, from the generator's own steps: diffusion steps, encoded frames, built
meshes). One small base per kind lives beside this module
(``media/images``, ``media/video``, ``media/avatar``), one module per
implementation, and a registry per kind whose default is the embedded one
that needs no weights. Heavy imports (torch, diffusers, trimesh, ...) happen
inside the implementations, with an error that names the extra to install.

The media layer knows nothing of tenants or conversations (ARCHITECTURE.md):
the job that calls a generator (agents/media.py) stores the result and
turns progress into ``media.progress`` events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

MediaKind = Literal["image", "video", "avatar"]
KINDS: tuple[MediaKind, ...] = ("image", "video", "avatar")

Progress = Callable[..., Awaitable[None]]
"""``await progress(fraction, **info)``: fraction in 0..1, ``info`` JSON values
(``step=3, steps=20``). Called in order; never required (a no-op by default)."""


async def no_progress(fraction: float, **info: Any) -> None:
    """The default :data:`Progress`: reports go nowhere."""


@dataclass(frozen=True)
class PersonaLook:
    """What a generator may know of the persona it draws: a name and a few attributes.

    ``attributes`` comes from the persona's data (description, appearance
    tags, colours, ...) as plain strings; generators use what they understand
    and ignore the rest. ``image``: the persona's portrait (PNG/JPEG bytes)
    when one is known, e.g. for image-to-video.
    """

    name: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    image: bytes | None = None


@dataclass(frozen=True)
class MediaRequest:
    """One thing to generate.

    ``prompt``: what to show, already moderated. ``width``/``height`` in
    pixels (images, video frames), ``seconds``/``fps`` for video, ``steps``
    for iterative generators (None = the generator's default), ``seed`` for
    reproducible output (None = random), ``options``: generator-specific
    extras (e.g. an avatar's animation clips).
    """

    kind: MediaKind
    prompt: str
    persona: PersonaLook = field(default_factory=PersonaLook)
    width: int = 512
    height: int = 512
    steps: int | None = None
    seconds: float = 2.0
    fps: int = 12
    seed: int | None = None
    negative_prompt: str | None = None
    image: bytes | None = None  # an input image (image-to-video), PNG/JPEG
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GeneratedMedia:
    """A generator's result: the file's bytes and what they are."""

    data: bytes
    mime: str  # image/png, video/mp4, model/gltf-binary
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # generator, model, steps, seed, ...


class MediaGenerationError(Exception):
    """A generator could not make the media.

    ``code``: ``generator_unavailable`` (package, weights or key missing: the
    message names the extra or variable to set), ``invalid_request`` (bad
    size, empty prompt, unreadable input image), ``generation_timeout``,
    ``generation_refused`` (a provider's own safety refusal),
    ``generation_failed`` (anything else).
    """

    def __init__(self, message: str, *, code: str = "generation_failed") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class GeneratorCapabilities:
    """What a generator is, as data (shown by the API, used to pick defaults)."""

    local: bool = True  # runs in this process (no remote API)
    needs_weights: bool = False  # needs a model folder
    device: str = "cpu"  # cpu, cuda, remote
    max_width: int = 2048
    max_height: int = 2048
    mimes: tuple[str, ...] = ()


class MediaGenerator:
    """Common shape of the per-kind bases (``ImageGenerator``, ``VideoGenerator``, ``AvatarBuilder``).

    ``start()`` loads what is heavy (optional: ``generate`` loads on first
    use); ``generate`` must not block the event loop (CPU work goes to a
    thread) and must stop promptly when its task is cancelled (the client
    cancelled): between steps at the latest.
    """

    name: str = "generator"
    kind: MediaKind = "image"
    capabilities: GeneratorCapabilities = GeneratorCapabilities()

    async def start(self) -> None:
        """Load models now rather than on the first request."""

    async def generate(
        self, request: MediaRequest, progress: Progress = no_progress
    ) -> GeneratedMedia:
        raise NotImplementedError

    async def close(self) -> None:
        """Release models and clients."""
