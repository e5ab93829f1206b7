"""OpenAI's images API (or any server with an OpenAI-compatible ``/v1/images/generations``).

Uses the official ``openai`` SDK (a core dependency, as for the LLM and
TTS). One request per image (``n=1``); the image comes back base64 encoded
in the JSON (``b64_json``): the GPT image models always answer so (and
refuse a ``response_format`` parameter), the DALL-E models and compatible
servers are asked for it. A server that still answers with a ``url`` is
followed. Whatever format arrives, the result is PNG.

The API has no steps, seed or negative prompt: progress is 0 then 1, and
``seed``/``negative_prompt`` are ignored (``meta`` says so). Sizes are
snapped to what the named OpenAI model accepts (closest aspect ratio);
other models get the requested ``WIDTHxHEIGHT``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from typing import Any

import httpx
import openai

from media.generation import (
    GeneratedMedia,
    GeneratorCapabilities,
    MediaGenerationError,
    MediaRequest,
    Progress,
    no_progress,
)
from media.images.base import PNG, ImageGenerator, check_request, png_bytes

DEFAULT_MODEL = "gpt-image-1"
# The sizes OpenAI's own models take; any other model name gets WIDTHxHEIGHT as asked.
MODEL_SIZES: dict[str, tuple[tuple[int, int], ...]] = {
    "gpt-image": ((1024, 1024), (1536, 1024), (1024, 1536)),
    "dall-e-3": ((1024, 1024), (1792, 1024), (1024, 1792)),
    "dall-e-2": ((256, 256), (512, 512), (1024, 1024)),
}
# Error codes and words by which OpenAI (and compatible servers) say "our safety system refused".
REFUSAL_CODES = {"content_policy_violation", "moderation_blocked", "content_filter"}
REFUSAL_WORDS = ("safety system", "content policy", "moderation", "safety_violations")


def _sizes_for(model: str) -> tuple[tuple[int, int], ...] | None:
    for prefix, sizes in MODEL_SIZES.items():
        if model.startswith(prefix):
            return sizes
    return None


def api_size(model: str, width: int, height: int) -> str:
    """The ``size`` parameter for ``model``: an accepted size closest to the asked aspect and area."""
    sizes = _sizes_for(model)
    if sizes is None:
        return f"{width}x{height}"
    aspect, area = width / height, width * height

    def distance(size: tuple[int, int]) -> tuple[float, float]:
        return (abs(size[0] / size[1] - aspect), abs(size[0] * size[1] - area))

    best = min(sizes, key=distance)
    return f"{best[0]}x{best[1]}"


class OpenAIImageGenerator(ImageGenerator):
    """Images from an OpenAI-compatible ``images.generate`` endpoint; see the module docstring."""

    name = "openai"
    capabilities = GeneratorCapabilities(
        local=False,
        needs_weights=False,
        device="remote",
        max_width=4096,
        max_height=4096,
        mimes=(PNG,),
    )

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        model: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        if not api_key and not base_url:
            raise MediaGenerationError(
                "the OpenAI image generator needs an API key: set SALON_IMAGE_OPENAI_API_KEY "
                "(or SALON_IMAGE_OPENAI_BASE_URL for a compatible server that needs none)",
                code="generator_unavailable",
            )
        self.model = model or DEFAULT_MODEL
        self.base_url = base_url
        self.timeout = timeout
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "not-needed",
            base_url=base_url,
            timeout=openai.Timeout(timeout, connect=5.0),
            # One retry for a dropped connection or a 5xx; an image is too
            # slow and costly to try more often.
            max_retries=1,
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()

    def _params(self, request: MediaRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "prompt": request.prompt,
            "n": 1,
            "size": api_size(self.model, request.width, request.height),
        }
        if self.model.startswith("gpt-image"):
            # These models always answer b64_json and reject response_format.
            params["output_format"] = "png"
        else:
            params["response_format"] = "b64_json"
        return params

    async def generate(
        self, request: MediaRequest, progress: Progress = no_progress
    ) -> GeneratedMedia:
        """One ``images.generate`` call; progress 0 before it and 1 after (the API has no steps)."""
        check_request(request, self.capabilities)
        params = self._params(request)
        await progress(0.0, stage="requested")
        try:
            # The whole call, retry included, within the configured time.
            async with asyncio.timeout(self.timeout):
                response = await self._client.images.generate(**params)
                data = await self._image_bytes(response)
        except MediaGenerationError:
            raise
        except TimeoutError as exc:
            raise _timed_out() from exc
        except Exception as exc:
            raise _translate(exc) from exc
        png, width, height = await asyncio.to_thread(_as_png, data)
        await progress(1.0, stage="done")
        meta: dict[str, Any] = {"generator": self.name, "model": self.model, "size": params["size"]}
        ignored = [k for k in ("seed", "negative_prompt", "steps") if getattr(request, k)]
        if ignored:
            meta["ignored"] = ignored
        revised = getattr(response.data[0], "revised_prompt", None)
        if revised:
            meta["revised_prompt"] = revised
        return GeneratedMedia(data=png, mime=PNG, width=width, height=height, meta=meta)

    async def _image_bytes(self, response: Any) -> bytes:
        items = getattr(response, "data", None) or []
        if not items:
            raise MediaGenerationError(
                "the images endpoint answered with no image", code="generation_failed"
            )
        item = items[0]
        if item.b64_json:
            try:
                return base64.b64decode(item.b64_json, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise MediaGenerationError(
                    "the images endpoint answered with invalid base64", code="generation_failed"
                ) from exc
        if item.url:
            # Some compatible servers ignore response_format and answer with a link.
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=True) as client:
                answer = await client.get(item.url)
                answer.raise_for_status()
                return answer.content
        raise MediaGenerationError(
            "the images endpoint answered with neither b64_json nor url", code="generation_failed"
        )


def _as_png(data: bytes) -> tuple[bytes, int, int]:
    """``data`` (PNG, JPEG, WebP, ...) as PNG bytes and its size; PNG passes through unchanged."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.format == "PNG":
                return data, image.width, image.height
            return png_bytes(image), image.width, image.height
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise MediaGenerationError(
            f"the images endpoint answered with bytes that are not an image ({exc})",
            code="generation_failed",
        ) from exc


def _refused(exc: openai.APIStatusError) -> bool:
    code = getattr(exc, "code", None)
    if code in REFUSAL_CODES:
        return True
    text = str(getattr(exc, "message", "") or exc).lower()
    return any(word in text for word in REFUSAL_WORDS)


def _timed_out() -> MediaGenerationError:
    return MediaGenerationError(
        "the images endpoint did not answer in time (SALON_IMAGE_TIMEOUT_SECONDS)",
        code="generation_timeout",
    )


def _translate(exc: Exception) -> MediaGenerationError:
    """Map the SDK's errors to :class:`MediaGenerationError` codes."""
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return _timed_out()
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return MediaGenerationError(
            f"the images endpoint refused the key (HTTP {exc.status_code}): "
            "check SALON_IMAGE_OPENAI_API_KEY",
            code="generator_unavailable",
        )
    if isinstance(exc, openai.NotFoundError):
        return MediaGenerationError(
            f"the images endpoint does not know the model or path (HTTP 404): "
            f"check SALON_IMAGE_OPENAI_MODEL and SALON_IMAGE_OPENAI_BASE_URL ({exc.message})",
            code="generator_unavailable",
        )
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 400 and _refused(exc):
            return MediaGenerationError(
                f"the image provider refused the prompt: {exc.message}", code="generation_refused"
            )
        if exc.status_code in (400, 422):
            return MediaGenerationError(
                f"the images endpoint rejected the request: {exc.message}", code="invalid_request"
            )
        return MediaGenerationError(
            f"the images endpoint answered HTTP {exc.status_code}", code="generation_failed"
        )
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        return MediaGenerationError(
            "could not reach the images endpoint (SALON_IMAGE_OPENAI_BASE_URL)",
            code="generator_unavailable",
        )
    if isinstance(exc, httpx.HTTPStatusError):
        return MediaGenerationError(
            f"fetching the generated image answered HTTP {exc.response.status_code}",
            code="generation_failed",
        )
    return MediaGenerationError(
        f"image generation failed: {type(exc).__name__}", code="generation_failed"
    )
