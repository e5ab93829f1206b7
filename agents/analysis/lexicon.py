"""The embedded default analyzer: VADER sentiment and NRC emotion lexicons (English).

- Sentiment: vaderSentiment's ``polarity_scores`` (rule-based; handles
  negation, intensifiers, capitals, punctuation and emoticons).
- Emotions: the NRC Emotion Lexicon as shipped in NRCLex. We tokenize
  ourselves and call ``NRCLex.load_token_list`` (its ``load_raw_text`` needs
  NLTK corpora downloaded at run time, which these machines cannot do). The
  lexicon holds base forms, so a word it lacks is retried without a common
  English suffix ("scared" -> "scare", "friends" -> "friend"). A score is the
  share of one emotion among the emotion associations of the matched words
  (NRCLex's affect frequencies renormalized over Plutchik's eight, leaving
  out its ``positive``/``negative`` labels); all 0 when no word matched.
- Language: agents/analysis/language.py.

Both lexicons are English: other languages get mostly neutral sentiment and
no emotions (their ``language`` still says which they are).
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

from agents.analysis.base import EMOTIONS, Analysis, Analyzer, Sentiment, complete_emotions
from agents.analysis.language import detect_language, warm_up

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
# Suffixes tried, in order, for a word the lexicon lacks: (suffix, replacement).
_SUFFIXES = (
    ("ies", "y"),
    ("ied", "y"),
    ("ing", ""),
    ("ing", "e"),
    ("ed", ""),
    ("ed", "e"),
    ("es", ""),
    ("s", ""),
    ("ly", ""),
    ("ness", ""),
)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens (apostrophes kept inside words: "don't")."""
    return _WORD.findall(text.lower())


def sentiment_of(scores: dict[str, Any]) -> Sentiment:
    """A :class:`Sentiment` from VADER-style ``{"compound", "pos", "neu", "neg"}``."""
    return Sentiment(
        compound=float(scores.get("compound", 0.0)),
        pos=float(scores.get("pos", 0.0)),
        neu=float(scores.get("neu", 1.0)),
        neg=float(scores.get("neg", 0.0)),
    )


class LexiconAnalyzer(Analyzer):
    """VADER + NRC lexicons + py3langid: fast (thousands of texts a second), offline."""

    name: ClassVar[str] = "lexicon"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vader: Any = None
        self._lexicon: dict[str, Any] | None = None

    def start(self) -> None:
        self._load()
        warm_up()

    def _load(self) -> Any:
        with self._lock:
            if self._vader is None:
                from nrclex import NRCLex
                from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

                self._vader = SentimentIntensityAnalyzer()
                # NRCLex keeps its word -> affects table here; used only to
                # choose the form of a word to hand it (see _normalize).
                self._lexicon = getattr(NRCLex(), "__lexicon__", None)
        return self._vader

    def _normalize(self, token: str) -> str:
        lexicon = self._lexicon
        if lexicon is None or token in lexicon:
            return token
        for suffix, replacement in _SUFFIXES:
            if token.endswith(suffix) and len(token) - len(suffix) >= 3:
                candidate = token[: -len(suffix)] + replacement
                if candidate in lexicon:
                    return candidate
        return token

    def emotions(self, text: str) -> dict[str, float]:
        """Plutchik emotion shares of ``text`` (see the module docstring)."""
        from nrclex import NRCLex

        self._load()
        nrc = NRCLex()
        nrc.load_token_list([self._normalize(t) for t in tokenize(text)])
        counts = Counter({k: v for k, v in nrc.raw_emotion_scores.items() if k in EMOTIONS})
        total = sum(counts.values())
        if not total:
            return complete_emotions({})
        return complete_emotions({name: counts[name] / total for name in EMOTIONS})

    def sentiment(self, text: str) -> Sentiment:
        return sentiment_of(self._load().polarity_scores(text))

    def analyze_batch(self, texts: Sequence[str]) -> list[Analysis]:
        return [
            Analysis(
                sentiment=self.sentiment(text),
                emotions=self.emotions(text),
                language=detect_language(text),
            )
            for text in texts
        ]
