"""Video on demand: one base (:mod:`media.video.base`), one module per generator, a registry.

:mod:`media.video.animated` (embedded default: the persona's picture,
animated) and :mod:`media.video.diffusers_video` (a local diffusers
image-to-video or text-to-video pipeline). Imports here stay light: Pillow,
imageio-ffmpeg, torch and diffusers load inside the generators.
"""

from media.video.base import VIDEO_MIME, VideoGenerator, VideoPlan, plan_video
from media.video.registry import create_video_generator, register

__all__ = [
    "VIDEO_MIME",
    "VideoGenerator",
    "VideoPlan",
    "create_video_generator",
    "plan_video",
    "register",
]
