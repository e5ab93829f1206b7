"""Choose the video generator from configuration; the default is the embedded one.

``SALON_VIDEO_PROVIDER=auto`` (the default) uses the diffusers pipeline in
``SALON_VIDEO_DIFFUSERS_MODEL`` when that folder is set, else the embedded
:class:`~media.video.animated.AnimatedPortraitGenerator`, which needs no
weights. Generators register a factory taking the
:class:`~media.media_config.MediaConfig`; heavy imports happen inside them.
"""

from __future__ import annotations

from collections.abc import Callable

from media.generation import MediaGenerationError
from media.media_config import MediaConfig
from media.video.base import VideoGenerator

VideoFactory = Callable[[MediaConfig], VideoGenerator]
_FACTORIES: dict[str, VideoFactory] = {}


def register(name: str, factory: VideoFactory) -> None:
    """Make ``SALON_VIDEO_PROVIDER=name`` build a generator with ``factory(config)``."""
    _FACTORIES[name] = factory


def known() -> list[str]:
    """The registered provider names."""
    return sorted(_FACTORIES)


def _animated(config: MediaConfig) -> VideoGenerator:
    from media.video.animated import AnimatedPortraitGenerator

    return AnimatedPortraitGenerator()


def _diffusers(config: MediaConfig) -> VideoGenerator:
    from media.video.diffusers_video import DiffusersVideoGenerator

    # A missing folder is reported when the model loads (start/generate), as
    # generator_unavailable, so building the registry never touches the disk.
    return DiffusersVideoGenerator(
        config.video_diffusers_model, device=config.video_device, steps=config.video_steps
    )


register("animated", _animated)
register("diffusers", _diffusers)


def create_video_generator(config: MediaConfig | None = None) -> VideoGenerator:
    """Build the configured video generator (not started)."""
    config = config or MediaConfig()
    name = config.video_provider.strip().lower() or "auto"
    if name == "auto":
        name = "diffusers" if config.video_diffusers_model else "animated"
    if name not in _FACTORIES:
        raise MediaGenerationError(
            f"unknown video provider {name!r}; known: {', '.join(known())}",
            code="generator_unavailable",
        )
    return _FACTORIES[name](config)
