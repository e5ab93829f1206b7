"""The analyzer base: text in, sentiment + Plutchik's emotions + language out.

One small base with one method over plain values, one module per
implementation (agents/analysis/lexicon.py, the embedded default;
agents/analysis/transformer.py, local transformer weights), chosen by
settings through agents/analysis/registry.py. Analyzers are synchronous and
CPU-bound; callers run them in a thread (:meth:`Analyzer.analyze_async`).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from memory.models import PLUTCHIK_EMOTIONS

EMOTIONS: tuple[str, ...] = PLUTCHIK_EMOTIONS
"""Plutchik's eight basic emotions, the keys of :attr:`Analysis.emotions`."""


@dataclass(frozen=True)
class Sentiment:
    """VADER-style scores: ``compound`` in -1..1; ``pos``/``neu``/``neg`` proportions (sum ~1)."""

    compound: float = 0.0
    pos: float = 0.0
    neu: float = 1.0
    neg: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"compound": self.compound, "pos": self.pos, "neu": self.neu, "neg": self.neg}


@dataclass(frozen=True)
class Analysis:
    """The analysis of one text. ``emotions`` has exactly the keys of :data:`EMOTIONS`
    (0..1 each); ``language`` is an ISO 639-1 code, or None when undetermined."""

    sentiment: Sentiment = field(default_factory=Sentiment)
    emotions: dict[str, float] = field(default_factory=lambda: dict.fromkeys(EMOTIONS, 0.0))
    language: str | None = None

    def to_public(self) -> dict[str, Any]:
        """The ``analysis`` object of the API (docs/analysis.md)."""
        return {
            "sentiment": {k: round(v, 4) for k, v in self.sentiment.as_dict().items()},
            "emotions": {k: round(self.emotions.get(k, 0.0), 4) for k in EMOTIONS},
            "language": self.language,
        }


def complete_emotions(scores: dict[str, float]) -> dict[str, float]:
    """Exactly the eight emotion keys, in order, clamped to 0..1 (missing ones are 0)."""
    return {name: min(1.0, max(0.0, float(scores.get(name, 0.0)))) for name in EMOTIONS}


class AnalyzerError(Exception):
    """An analyzer cannot be built or loaded (a missing extra, a bad model path)."""


class Analyzer(ABC):
    """Analyses texts. Subclasses implement :meth:`analyze_batch`.

    ``name`` identifies the implementation in the stored analysis (``lexicon``,
    ``transformers``); instances may refine it with the model (:attr:`label`).
    """

    name: ClassVar[str] = "analyzer"

    @property
    def label(self) -> str:
        """What is stored as the analysis' ``analyzer`` (implementation, and model if any)."""
        return self.name

    def check(self) -> None:
        """Raise :class:`AnalyzerError` when this analyzer cannot work here (a missing
        extra, a missing model folder). Cheap: loads nothing; called at install."""

    def start(self) -> None:
        """Load what the analyzer needs (models, lexicons); called once, in a thread.

        Optional: :meth:`analyze_batch` must load lazily when it was not called.
        """

    @abstractmethod
    def analyze_batch(self, texts: Sequence[str]) -> list[Analysis]:
        """One :class:`Analysis` per text, in order. Blocking; thread-safe."""

    def analyze(self, text: str) -> Analysis:
        return self.analyze_batch([text])[0]

    async def analyze_async(self, texts: Sequence[str]) -> list[Analysis]:
        """:meth:`analyze_batch` in a worker thread, off the event loop."""
        return await asyncio.to_thread(self.analyze_batch, list(texts))

    def close(self) -> None:
        """Release what :meth:`start` loaded."""
