"""Top topics of what people said: keyphrases (YAKE) counted across messages.

Each message contributes its few best keyphrases once (document frequency),
so a topic ranks by how many messages raise it, not by one long rant.
YAKE is the feeds' extractor (integrations/rss/analyze.py): unsupervised,
offline, no model to load. CPU-bound: call :func:`top_topics` in a thread.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from integrations.rss.analyze import TextAnalyzer

PHRASES_PER_MESSAGE = 3
_analyzer = TextAnalyzer(keyphrases=PHRASES_PER_MESSAGE, max_ngram=2)


def top_topics(
    texts: Iterable[str], *, limit: int = 10, min_count: int = 2
) -> list[dict[str, object]]:
    """``[{topic, count}]``, most raised first; phrases raised fewer than ``min_count`` times
    are left out (one person's aside is not a topic)."""
    counts: Counter[str] = Counter()
    for text in texts:
        if len(text.split()) < 2:
            continue  # "hi", "ok": nothing to extract
        counts.update(set(_analyzer.keyphrases_of(text)))
    ranked = sorted(
        ((phrase, n) for phrase, n in counts.items() if n >= min_count),
        key=lambda item: (-item[1], item[0]),
    )
    return [{"topic": phrase, "count": n} for phrase, n in ranked[:limit]]
