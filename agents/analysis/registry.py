"""Which analyzer a deployment uses: chosen by :class:`AnalysisSettings`, lexicons by default."""

from __future__ import annotations

from collections.abc import Callable

from agents.analysis.base import Analyzer, AnalyzerError
from agents.analysis.settings import AnalysisSettings


def _lexicon(settings: AnalysisSettings) -> Analyzer:
    from agents.analysis.lexicon import LexiconAnalyzer

    return LexiconAnalyzer()


def _transformers(settings: AnalysisSettings) -> Analyzer:
    from agents.analysis.transformer import TransformerAnalyzer

    return TransformerAnalyzer(
        sentiment_model=settings.sentiment_model,
        emotion_model=settings.emotion_model,
        device=settings.device,
    )


ANALYZERS: dict[str, Callable[[AnalysisSettings], Analyzer]] = {
    "lexicon": _lexicon,
    "transformers": _transformers,
}


def analyzer_name(settings: AnalysisSettings) -> str:
    """The registry entry ``settings`` choose (``auto`` resolved)."""
    if settings.analyzer != "auto":
        return settings.analyzer
    return "transformers" if settings.sentiment_model or settings.emotion_model else "lexicon"


def create_analyzer(settings: AnalysisSettings | None = None) -> Analyzer:
    """Build the configured analyzer (not loaded yet: call its ``start`` in a thread)."""
    settings = settings or AnalysisSettings()
    name = analyzer_name(settings)
    factory = ANALYZERS.get(name)
    if factory is None:  # pragma: no cover - the settings' Literal refuses it first
        raise AnalyzerError(f"unknown analyzer {name!r} (known: {', '.join(ANALYZERS)})")
    return factory(settings)
