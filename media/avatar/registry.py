"""Choose the avatar builder from configuration; the default is the embedded one.

``SALON_AVATAR_PROVIDER=auto`` (the default) and ``procedural`` build the
stylized figure of :mod:`media.avatar.procedural` (trimesh + pygltflib, no
weights). Builders register a factory taking the
:class:`~media.media_config.MediaConfig`; heavy imports happen inside them.
Imported avatars (GLB/VRM uploads) do not go through a builder: see
:func:`media.avatar.importer.import_avatar`.
"""

from __future__ import annotations

from collections.abc import Callable

from media.avatar.base import AvatarBuilder
from media.generation import MediaGenerationError
from media.media_config import MediaConfig

AvatarFactory = Callable[[MediaConfig], AvatarBuilder]
_FACTORIES: dict[str, AvatarFactory] = {}


def register(name: str, factory: AvatarFactory) -> None:
    """Make ``SALON_AVATAR_PROVIDER=name`` build an avatar builder with ``factory(config)``."""
    _FACTORIES[name] = factory


def known() -> list[str]:
    """The registered provider names."""
    return sorted(_FACTORIES)


def _procedural(config: MediaConfig) -> AvatarBuilder:
    from media.avatar.procedural import ProceduralAvatarBuilder

    return ProceduralAvatarBuilder()


register("procedural", _procedural)


def create_avatar_builder(config: MediaConfig | None = None) -> AvatarBuilder:
    """Build the configured avatar builder."""
    config = config or MediaConfig()
    name = config.avatar_provider.strip().lower() or "auto"
    if name == "auto":
        name = "procedural"
    if name not in _FACTORIES:
        raise MediaGenerationError(
            f"unknown avatar provider {name!r}; known: {', '.join(known())}",
            code="generator_unavailable",
        )
    return _FACTORIES[name](config)
