"""Choose the embedder from configuration; the default is the embedded MiniLM."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memory.embeddings.base import Embedder

EmbedderFactory = Callable[..., Embedder]
_FACTORIES: dict[str, EmbedderFactory] = {}

# Native sizes of well-known hosted models, so that naming one is enough.
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
DEFAULT_OPENAI_MODEL = "text-embedding-3-small"


def register(name: str, factory: EmbedderFactory) -> None:
    """Make ``SALON_EMBEDDINGS_PROVIDER=name`` build an embedder with ``factory(**options)``."""
    _FACTORIES[name] = factory


def _local(**options: Any) -> Embedder:
    from memory.embeddings.minilm import MiniLMEmbedder

    return MiniLMEmbedder(**options)


def _openai(**options: Any) -> Embedder:
    from memory.embeddings.openai_compat import OpenAIEmbedder

    return OpenAIEmbedder(**options)


register("local", _local)
register("openai", _openai)


def create_embedder(
    *,
    provider: str | None,
    base_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    dimensions: int | None = None,
    timeout: float = 30.0,
) -> Embedder:
    """Build the configured embedder.

    With no explicit ``provider``, a configured ``base_url`` means an
    OpenAI-compatible endpoint and otherwise the embedded MiniLM (as for the
    LLM provider). For ``local``, ``model`` is an optional path to another
    sentence-transformers folder. For ``openai``, ``dimensions`` may be left
    out only for a model in :data:`KNOWN_DIMENSIONS`.
    """
    name = (provider or ("openai" if base_url else "local")).strip().lower()
    if name == "minilm":
        name = "local"
    if name not in _FACTORIES:
        raise ValueError(
            f"unknown embeddings provider {name!r}; known: {', '.join(sorted(_FACTORIES))}"
        )
    if name == "local":
        options: dict[str, Any] = {}
        if model:
            options["model_path"] = model
        if dimensions:
            options["dimensions"] = dimensions
        return _FACTORIES[name](**options)
    if name == "openai":
        model = model or DEFAULT_OPENAI_MODEL
        dims = dimensions or KNOWN_DIMENSIONS.get(model)
        if not dims:
            raise ValueError(
                f"set SALON_EMBEDDINGS_DIMENSIONS for embeddings model {model!r} "
                "(the vector size it returns)"
            )
        return _FACTORIES[name](
            base_url=base_url, api_key=api_key, model=model, dimensions=dims, timeout=timeout
        )
    return _FACTORIES[name](
        base_url=base_url, api_key=api_key, model=model, dimensions=dimensions, timeout=timeout
    )
