"""Per-item text analysis: keyphrases (YAKE) and sentiment (VADER).

Both are small, dependency-light and run offline: YAKE is unsupervised
(statistics of the text itself, no model), VADER a lexicon shipped in its
package. They are called directly here rather than through agents/analysis
so that feeds work whether or not that part is installed.

Phrases are at most two words: trends count phrases that recur across
items, and YAKE's three-word candidates ("startup raises record") rarely
recur, while they push the recurring two-word ones out of an item's top list.
Keyphrases are normalised (lower case, inner whitespace collapsed, outer
punctuation stripped) because trends count the same phrase across items.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

_NORMALISE = re.compile(r"\s+")
_EDGE = re.compile(r"^[\W_]+|[\W_]+$")
# A phrase that is only digits or a single character says nothing.
_TRIVIAL = re.compile(r"^[\d\W_]*$")
MAX_TEXT = 5000


@dataclass(frozen=True)
class ItemAnalysis:
    keyphrases: list[str]
    sentiment: float  # VADER compound score, -1..1


def normalise_phrase(phrase: str) -> str:
    phrase = _NORMALISE.sub(" ", phrase).strip().lower()
    return _EDGE.sub("", phrase)


class TextAnalyzer:
    """Thread-safe lazy holders for the YAKE extractor and the VADER analyzer.

    The work is CPU-bound and synchronous; callers run it in a thread
    (``asyncio.to_thread``) so the event loop keeps serving.
    """

    def __init__(self, *, keyphrases: int = 10, max_ngram: int = 2, language: str = "en") -> None:
        self.keyphrases = keyphrases
        self.max_ngram = max_ngram
        self.language = language
        self._lock = threading.Lock()
        self._yake: Any = None
        self._vader: Any = None

    def _extractor(self) -> Any:
        with self._lock:
            if self._yake is None:
                import yake

                # Ask for more than we keep: normalising merges some candidates.
                self._yake = yake.KeywordExtractor(
                    lan=self.language, n=self.max_ngram, top=self.keyphrases * 2, dedup_lim=0.9
                )
            return self._yake

    def _sentiment(self) -> Any:
        with self._lock:
            if self._vader is None:
                from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

                self._vader = SentimentIntensityAnalyzer()
            return self._vader

    def keyphrases_of(self, text: str) -> list[str]:
        """The text's keyphrases, most relevant first (YAKE: lower score = more relevant)."""
        text = text[:MAX_TEXT]
        if not text.strip():
            return []
        # YAKE's extractor keeps no state between calls, but guard it anyway:
        # it is cheap next to the extraction and its thread safety is undocumented.
        extractor = self._extractor()
        with self._lock:
            scored = extractor.extract_keywords(text)
        out: list[str] = []
        for phrase, _score in sorted(scored, key=lambda pair: float(pair[1])):
            norm = normalise_phrase(str(phrase))
            if len(norm) < 2 or _TRIVIAL.match(norm) or norm in out:
                continue
            out.append(norm)
            if len(out) >= self.keyphrases:
                break
        return out

    def sentiment_of(self, text: str) -> float:
        if not text.strip():
            return 0.0
        scores = self._sentiment().polarity_scores(text[:MAX_TEXT])
        return round(float(scores.get("compound", 0.0)), 4)

    def analyze(self, title: str, summary: str) -> ItemAnalysis:
        """Keyphrases and sentiment of one item (title and summary read as one text)."""
        # The title is a sentence of its own; without the stop, YAKE may join
        # its last word with the summary's first into a phrase.
        text = f"{title.rstrip('.!?')}. {summary}" if summary else title
        return ItemAnalysis(self.keyphrases_of(text), self.sentiment_of(text))
