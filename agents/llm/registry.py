"""Choose the LLM provider from configuration; the default is the embedded model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.llm.base import LLMProvider

ProviderFactory = Callable[..., LLMProvider]
_FACTORIES: dict[str, ProviderFactory] = {}


def register(name: str, factory: ProviderFactory) -> None:
    """Make ``SALON_LLM_PROVIDER=name`` build a provider with ``factory(**options)``."""
    _FACTORIES[name] = factory


def _openai(**options: Any) -> LLMProvider:
    from agents.llm.openai_compat import OpenAICompatibleProvider

    return OpenAICompatibleProvider(**options)


def _local(**options: Any) -> LLMProvider:
    from agents.llm.local import LocalLLMProvider

    return LocalLLMProvider(**options)


register("openai", _openai)
register("local", _local)


def create_provider(
    *,
    provider: str | None,
    base_url: str | None,
    api_key: str | None,
    model: str | None,
    timeout: float,
    max_retries: int,
    data_dir: Path,
) -> LLMProvider:
    """Build the configured provider.

    With no explicit ``provider``, a configured ``base_url`` means an
    OpenAI-compatible endpoint and otherwise the embedded local model.
    """
    name = provider or ("openai" if base_url else "local")
    if name not in _FACTORIES:
        raise ValueError(f"unknown LLM provider {name!r}; known: {', '.join(sorted(_FACTORIES))}")
    if name == "openai":
        return _FACTORIES[name](
            base_url=base_url,
            api_key=api_key,
            model=model or "gpt-4o-mini",
            timeout=timeout,
            max_retries=max_retries,
        )
    if name == "local":
        return _FACTORIES[name](cache_dir=data_dir / "models")
    return _FACTORIES[name]()
