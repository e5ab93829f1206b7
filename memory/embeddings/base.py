"""Embedder base: turn texts into unit-length vectors for semantic recall.

One small base, one module per implementation (:mod:`memory.embeddings.minilm`,
the embedded default; :mod:`memory.embeddings.openai_compat`), chosen by
configuration through :mod:`memory.embeddings.registry`.

The base owns what every implementation must get right the same way: input
checks, splitting large inputs into batches of ``batch_size`` (each batch is
one model call or one HTTP request), keeping the order, and checking that each
batch came back with one vector of ``dimensions`` floats per text. Every
failure is an :class:`EmbeddingError` with a stable ``code``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

Vector = list[float]


class EmbeddingError(Exception):
    """Embedding failed. ``code`` is stable and safe to show or log.

    Codes: ``embedding_unavailable`` (a package or the endpoint is missing),
    ``embedding_timeout``, ``embedding_bad_response`` (wrong count, size or a
    zero vector), ``embedding_error`` (anything else).
    """

    def __init__(self, message: str, *, code: str = "embedding_error") -> None:
        super().__init__(message)
        self.code = code


def normalize(vector: Sequence[float]) -> Vector:
    """``vector`` scaled to length 1; a zero or non-finite vector is an error."""
    norm = math.hypot(*vector)
    if not math.isfinite(norm) or norm == 0.0:
        raise EmbeddingError(
            "the embedding model returned a zero or non-finite vector",
            code="embedding_bad_response",
        )
    return [x / norm for x in vector]


class Embedder(ABC):
    """Embed texts as L2-normalized vectors of ``dimensions`` floats.

    Implementations override :meth:`_embed_batch`; callers use :meth:`embed`.
    Vectors are unit length, so cosine similarity is a plain dot product.
    ``model`` names the model that produced the vectors: stores keep it next
    to each vector, so a change of model is detected rather than mixing
    incomparable vectors.
    """

    name: str = "base"
    model: str = ""
    dimensions: int = 0
    batch_size: int = 32

    async def start(self) -> None:
        """Load the model or open the client ahead of the first call (optional)."""

    async def close(self) -> None:
        """Release what :meth:`start` or the first call acquired."""

    @abstractmethod
    async def _embed_batch(self, texts: list[str]) -> list[Vector]:
        """Vectors for at most ``batch_size`` texts, unit length, in order."""

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One unit vector per text, in the order given; ``[]`` for no texts.

        Large inputs are sent ``batch_size`` texts at a time, so other callers
        (a query waiting behind a bulk ingest) get their turn between batches.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts, not one string")
        items = list(texts)
        for text in items:
            if not isinstance(text, str):
                raise TypeError(f"embed() takes strings, got {type(text).__name__}")
        vectors: list[Vector] = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            out = await self._embed_batch(batch)
            self._check(batch, out)
            vectors.extend(out)
        return vectors

    async def embed_one(self, text: str) -> Vector:
        """The vector of a single text (a search query, say)."""
        return (await self.embed([text]))[0]

    def _check(self, batch: list[str], vectors: list[Vector]) -> None:
        if len(vectors) != len(batch):
            raise EmbeddingError(
                f"{self.name} embedder returned {len(vectors)} vectors for {len(batch)} texts",
                code="embedding_bad_response",
            )
        for vector in vectors:
            if len(vector) != self.dimensions:
                raise EmbeddingError(
                    f"{self.name} embedder returned {len(vector)}-d vectors, "
                    f"configured for {self.dimensions}-d (set SALON_EMBEDDINGS_DIMENSIONS)",
                    code="embedding_bad_response",
                )
