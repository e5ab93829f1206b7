"""Choose the image generator from configuration; the default is the embedded procedural one.

``SALON_IMAGE_PROVIDER=auto`` (the default) picks the diffusers generator
when ``SALON_IMAGE_DIFFUSERS_MODEL`` names a pipeline folder and the
procedural generator otherwise, so a plain install still answers with an
image. Factories take the :class:`~media.media_config.MediaConfig`; heavy
imports happen inside the implementations, on first use.
"""

from __future__ import annotations

from collections.abc import Callable

from media.generation import MediaGenerationError
from media.images.base import ImageGenerator
from media.media_config import MediaConfig

ImageGeneratorFactory = Callable[[MediaConfig], ImageGenerator]
_FACTORIES: dict[str, ImageGeneratorFactory] = {}


def register(name: str, factory: ImageGeneratorFactory) -> None:
    """Make ``SALON_IMAGE_PROVIDER=name`` build a generator with ``factory(config)``."""
    _FACTORIES[name.strip().lower()] = factory


def known() -> list[str]:
    """The provider names that can be configured (``auto`` besides)."""
    return sorted(_FACTORIES)


def _procedural(config: MediaConfig) -> ImageGenerator:
    from media.images.procedural import ProceduralImageGenerator

    return ProceduralImageGenerator()


def _diffusers(config: MediaConfig) -> ImageGenerator:
    from media.images.diffusers_image import DiffusersImageGenerator

    if config.image_diffusers_model is None:
        raise MediaGenerationError(
            "the diffusers image generator needs a pipeline folder: set SALON_IMAGE_DIFFUSERS_MODEL",
            code="generator_unavailable",
        )
    return DiffusersImageGenerator(
        config.image_diffusers_model,
        device=config.image_device,
        default_steps=config.image_steps,
    )


def _openai(config: MediaConfig) -> ImageGenerator:
    from media.images.openai_images import OpenAIImageGenerator

    key = config.image_openai_api_key
    return OpenAIImageGenerator(
        api_key=key.get_secret_value() if key is not None else None,
        base_url=config.image_openai_base_url,
        model=config.image_openai_model,
        timeout=config.image_timeout_seconds,
    )


register("procedural", _procedural)
register("diffusers", _diffusers)
register("openai", _openai)


def provider_name(config: MediaConfig) -> str:
    """The provider ``config`` selects, with ``auto`` resolved."""
    name = config.image_provider.strip().lower() or "auto"
    if name == "auto":
        return "diffusers" if config.image_diffusers_model is not None else "procedural"
    return name


def create_image_generator(config: MediaConfig | None = None) -> ImageGenerator:
    """Build the configured image generator (``MediaConfig()`` from the environment by default).

    An unknown provider name, or a provider that cannot be set up (no key, no
    folder), raises :class:`~media.generation.MediaGenerationError` with code
    ``generator_unavailable``; a missing package is reported when the
    generator first loads (``start`` or ``generate``).
    """
    config = config or MediaConfig()
    name = provider_name(config)
    factory = _FACTORIES.get(name)
    if factory is None:
        raise MediaGenerationError(
            f"unknown image provider {name!r} (SALON_IMAGE_PROVIDER); "
            f"known: auto, {', '.join(known())}",
            code="generator_unavailable",
        )
    return factory(config)
