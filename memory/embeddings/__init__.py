"""Text embeddings for semantic recall: one base, a local and an OpenAI-compatible embedder.

Nothing heavy is imported here: torch and sentence-transformers load only when
the local embedder first runs. See docs/embeddings.md.
"""

from memory.embeddings.base import Embedder, EmbeddingError, Vector, normalize
from memory.embeddings.registry import create_embedder, register

__all__ = ["Embedder", "EmbeddingError", "Vector", "create_embedder", "normalize", "register"]
