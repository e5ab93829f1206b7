"""Image generation: one base (:mod:`media.images.base`), one module per engine, a registry.

The embedded default (:mod:`media.images.procedural`) needs no weights;
:mod:`media.images.diffusers_image` runs a local Stable Diffusion class
pipeline and :mod:`media.images.openai_images` an OpenAI-compatible images
API. See docs/media-images.md.
"""

from media.images.base import ImageGenerator
from media.images.registry import create_image_generator, known, register

__all__ = ["ImageGenerator", "create_image_generator", "known", "register"]
