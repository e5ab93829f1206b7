"""Any OpenAI-compatible embeddings endpoint (OpenAI, vLLM, Ollama, llama.cpp, TEI, ...).

Uses the official ``openai`` SDK (``client.embeddings.create``), one request
per batch of ``batch_size`` texts. Vectors are re-normalized here, because not
every server returns unit vectors. The wire format is left to the SDK
(base64 unless ``encoding_format`` says otherwise; it decodes either answer).

``dimensions`` is what the store expects. It is *sent* to the endpoint only
for models that can shorten their vectors (``text-embedding-3-*``), unless
``send_dimensions`` says otherwise: other servers may reject the field. Every
answer is checked against it.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx2  # the HTTP client the openai SDK (3.x) is built on
import openai

from memory.embeddings.base import Embedder, EmbeddingError, Vector, normalize


class OpenAIEmbedder(Embedder):
    name = "openai"

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        model: str,
        dimensions: int,
        batch_size: int = 128,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_retries: int = 1,
        send_dimensions: bool | None = None,
        encoding_format: Literal["float", "base64"] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if dimensions < 1:
            raise ValueError("dimensions must be at least 1")
        self.model = model
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.send_dimensions = (
            model.startswith("text-embedding-3") if send_dimensions is None else send_dimensions
        )
        self.encoding_format = encoding_format
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            # Local servers (Ollama, llama.cpp) accept any key; the SDK insists on one.
            api_key=api_key or "not-needed",
            timeout=openai.Timeout(timeout, connect=connect_timeout),
            max_retries=max_retries,
        )

    async def close(self) -> None:
        await self._client.close()

    async def _embed_batch(self, texts: list[str]) -> list[Vector]:
        request: dict[str, Any] = {
            "model": self.model,
            # The API rejects empty strings; a blank embeds as "nothing said".
            "input": [text if text.strip() else " " for text in texts],
        }
        if self.send_dimensions:
            request["dimensions"] = self.dimensions
        if self.encoding_format:
            request["encoding_format"] = self.encoding_format
        try:
            response = await self._client.embeddings.create(**request)
        except Exception as exc:
            raise _translate(exc) from exc
        try:
            items = sorted(response.data, key=lambda item: item.index)
            vectors = [list(item.embedding) for item in items]
        except (AttributeError, TypeError, ValueError) as exc:
            raise EmbeddingError(
                f"the embeddings endpoint gave an unreadable answer: {exc}",
                code="embedding_bad_response",
            ) from exc
        if len(vectors) != len(texts):
            raise EmbeddingError(
                f"the embeddings endpoint returned {len(vectors)} vectors for {len(texts)} texts",
                code="embedding_bad_response",
            )
        return [normalize(vector) for vector in vectors]


def _translate(exc: Exception) -> EmbeddingError:
    if isinstance(exc, EmbeddingError):
        return exc
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        return EmbeddingError(
            "the embeddings endpoint did not answer in time", code="embedding_timeout"
        )
    if isinstance(exc, openai.APIStatusError):
        return EmbeddingError(
            f"the embeddings endpoint answered HTTP {exc.status_code}", code="embedding_error"
        )
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return EmbeddingError(
            "could not reach the embeddings endpoint", code="embedding_unavailable"
        )
    if isinstance(exc, ValueError):  # the SDK's "No embedding data received"
        return EmbeddingError(
            f"the embeddings endpoint gave an unusable answer: {exc}",
            code="embedding_bad_response",
        )
    return EmbeddingError(
        f"the embeddings endpoint failed: {type(exc).__name__}", code="embedding_error"
    )
