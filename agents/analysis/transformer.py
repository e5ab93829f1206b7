"""Transformer text-classification models from local folders replace the lexicons.

Configured with ``SALON_ANALYSIS_SENTIMENT_MODEL`` and/or
``SALON_ANALYSIS_EMOTION_MODEL`` (paths to a saved Hugging Face model and
tokenizer; nothing is downloaded). Whichever is not set keeps the lexicon
(agents/analysis/lexicon.py); language identification is always py3langid.

Labels are mapped by name, so the usual public models work as they are:

- sentiment: ``positive``/``neutral``/``negative`` (any case, or ``pos``...),
  ``LABEL_0..2`` (negative, neutral, positive; with two labels negative,
  positive) and ``1 star``..``5 stars``. ``pos``/``neu``/``neg`` are the
  label probabilities and ``compound`` is ``pos - neg``.
- emotions: labels named after Plutchik's emotions or a common synonym
  (``happiness`` -> joy, ``optimism`` -> anticipation, ``love`` -> joy and
  trust, ...); others (``neutral``) are left out.

``transformers`` and ``torch`` come with the ``local-models`` extra and are
imported only here, when this analyzer is built.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from agents.analysis.base import (
    EMOTIONS,
    Analysis,
    Analyzer,
    AnalyzerError,
    Sentiment,
    complete_emotions,
)
from agents.analysis.language import detect_language
from agents.analysis.lexicon import LexiconAnalyzer

EXTRA = "local-models"
# A label -> its share of each Plutchik emotion.
EMOTION_LABELS: dict[str, dict[str, float]] = {
    **{name: {name: 1.0} for name in EMOTIONS},
    "happiness": {"joy": 1.0},
    "happy": {"joy": 1.0},
    "amusement": {"joy": 1.0},
    "excitement": {"joy": 1.0},
    "optimism": {"anticipation": 1.0},
    "love": {"joy": 0.5, "trust": 0.5},
    "admiration": {"trust": 1.0},
    "angry": {"anger": 1.0},
    "annoyance": {"anger": 1.0},
    "fearful": {"fear": 1.0},
    "scared": {"fear": 1.0},
    "nervousness": {"fear": 1.0},
    "sad": {"sadness": 1.0},
    "grief": {"sadness": 1.0},
    "surprised": {"surprise": 1.0},
    "disgusted": {"disgust": 1.0},
}
_STARS = re.compile(r"^([1-5])\s*stars?$")

# pipeline(texts) -> for each text, [{"label": str, "score": float}, ...]
Classifier = Callable[[list[str]], list[list[dict[str, Any]]]]


def sentiment_from_labels(scores: Sequence[dict[str, Any]]) -> Sentiment:
    """Map one text's label probabilities to :class:`Sentiment` (see the module docstring)."""
    labels = {str(s["label"]).strip().lower(): float(s["score"]) for s in scores}
    pos = neu = neg = 0.0
    numbered = sorted(k for k in labels if k.startswith("label_"))
    for label, score in labels.items():
        if label.startswith("pos"):
            pos += score
        elif label.startswith("neg"):
            neg += score
        elif label.startswith("neu"):
            neu += score
        elif match := _STARS.match(label):
            stars = int(match.group(1))
            if stars <= 2:
                neg += score
            elif stars == 3:
                neu += score
            else:
                pos += score
        elif label in numbered:
            index = numbered.index(label)
            if index == 0:
                neg += score
            elif index == len(numbered) - 1:
                pos += score
            else:
                neu += score
    total = pos + neu + neg
    if total <= 0:
        return Sentiment()
    pos, neu, neg = pos / total, neu / total, neg / total
    return Sentiment(compound=max(-1.0, min(1.0, pos - neg)), pos=pos, neu=neu, neg=neg)


def emotions_from_labels(scores: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Map one text's label probabilities to the eight Plutchik emotions."""
    out = dict.fromkeys(EMOTIONS, 0.0)
    for item in scores:
        shares = EMOTION_LABELS.get(str(item["label"]).strip().lower())
        for name, share in (shares or {}).items():
            out[name] += share * float(item["score"])
    return complete_emotions(out)


class TransformerAnalyzer(Analyzer):
    """Sentiment and/or emotions from local text-classification models."""

    name: ClassVar[str] = "transformers"

    def __init__(
        self,
        *,
        sentiment_model: str | None = None,
        emotion_model: str | None = None,
        device: str = "cpu",
        batch_size: int = 16,
        fallback: Analyzer | None = None,
    ) -> None:
        if not sentiment_model and not emotion_model:
            raise AnalyzerError(
                "the transformers analyzer needs SALON_ANALYSIS_SENTIMENT_MODEL "
                "and/or SALON_ANALYSIS_EMOTION_MODEL (local model folders)"
            )
        self.sentiment_model = sentiment_model
        self.emotion_model = emotion_model
        self.device = device
        self.batch_size = batch_size
        self.fallback = fallback or LexiconAnalyzer()
        self._lock = threading.Lock()
        self._sentiment: Classifier | None = None
        self._emotion: Classifier | None = None

    @property
    def label(self) -> str:
        models = [Path(m).name for m in (self.sentiment_model, self.emotion_model) if m]
        return f"{self.name}:{'+'.join(models)}"[:200]

    def check(self) -> None:
        for path in (self.sentiment_model, self.emotion_model):
            if path and not Path(path).exists():
                raise AnalyzerError(f"analysis model folder {path!r} does not exist")
        if importlib.util.find_spec("transformers") is None:
            raise AnalyzerError(
                f"the transformers analyzer needs the '{EXTRA}' extra "
                f"(pip install 'salon[{EXTRA}]'): transformers is not installed"
            )

    def _load_pipeline(self, path: str) -> Classifier:
        """A ``text-classification`` pipeline returning every label's score."""
        try:
            from transformers import pipeline
        except ImportError as exc:
            raise AnalyzerError(
                f"the transformers analyzer needs the '{EXTRA}' extra "
                f"(pip install 'salon[{EXTRA}]'): {exc}"
            ) from exc
        if not Path(path).exists():
            raise AnalyzerError(f"analysis model folder {path!r} does not exist")
        classifier = pipeline(
            "text-classification", model=path, tokenizer=path, top_k=None, device=self.device
        )

        max_length = _max_length(classifier)

        def classify(texts: list[str]) -> list[list[dict[str, Any]]]:
            # With top_k=None a list of texts gives one list of {label, score} per text.
            results: Any = classifier(
                texts, batch_size=self.batch_size, truncation=True, max_length=max_length
            )
            return [list(scores) for scores in results]

        return classify

    def start(self) -> None:
        with self._lock:
            if self.sentiment_model and self._sentiment is None:
                self._sentiment = self._load_pipeline(self.sentiment_model)
            if self.emotion_model and self._emotion is None:
                self._emotion = self._load_pipeline(self.emotion_model)
        if not (self.sentiment_model and self.emotion_model):
            self.fallback.start()

    def analyze_batch(self, texts: Sequence[str]) -> list[Analysis]:
        items = list(texts)
        if not items:
            return []
        if (self.sentiment_model and self._sentiment is None) or (
            self.emotion_model and self._emotion is None
        ):
            self.start()
        lexical = None
        if self._sentiment is None or self._emotion is None:
            lexical = self.fallback.analyze_batch(items)
        sentiments = (
            [sentiment_from_labels(s) for s in self._sentiment(items)]
            if self._sentiment is not None
            else [a.sentiment for a in lexical or ()]
        )
        emotions = (
            [emotions_from_labels(s) for s in self._emotion(items)]
            if self._emotion is not None
            else [a.emotions for a in lexical or ()]
        )
        languages = (
            [a.language for a in lexical] if lexical else [detect_language(t) for t in items]
        )
        return [
            Analysis(sentiment=s, emotions=e, language=lang)
            for s, e, lang in zip(sentiments, emotions, languages, strict=True)
        ]


def _max_length(classifier: Any) -> int:
    """How many tokens the model takes: its tokenizer's limit, else its position table's.

    A tokenizer saved without ``model_max_length`` reports a huge number, and
    truncating to it would overflow the position embeddings on a long message.
    The 2 spare positions cover RoBERTa-style models, whose table is offset by 2.
    """
    limit = int(getattr(classifier.tokenizer, "model_max_length", 0) or 0)
    positions = int(getattr(classifier.model.config, "max_position_embeddings", 0) or 0)
    if 0 < limit <= 100_000:
        return limit
    return positions - 2 if positions > 2 else 512
