"""Trending topics: keyphrases that occur in more items now than they used to.

Windows (``W`` = ``window``, ``K`` = ``baseline_windows``), ending at ``now``::

    current  = (now - W, now]
    baseline = (now - (K + 1) * W, now - W]

For each keyphrase ``p``:

- ``c`` = number of items in the current window that have ``p``;
- ``b`` = number of items in the baseline that have ``p``, and
  ``e = b / K`` the count expected in one window at the baseline's rate;
- ``ratio = (c + 1) / (e + 1)`` (add-one smoothing: a phrase never seen before
  with ``c = 3`` gets 4, not infinity);
- ``score = (c - e) / sqrt(e + 1)``: how many standard deviations ``c`` lies
  above ``e`` if counts were Poisson with mean ``e``; the ``+ 1`` keeps rare
  phrases from producing huge scores out of one or two items.

A phrase trends when ``c >= min_count``, ``ratio >= min_ratio`` and
``score >= min_score``; trending phrases are ranked by score, then count,
then length (more words first). A
phrase as frequent as before (flat) has ``score ~ 0`` and one used less than
before (falling) a negative score: neither trends.

An item is counted once per phrase, and items with the same title (one story
carried by several feeds of the persona) count once. Phrases that say the
same thing as a better-ranked one (one's words contain the other's, and they
are found in mostly the same items) are folded into it, so "solar power" and
"solar" do not take two places.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

# Two phrases whose item sets overlap this much (Jaccard) and whose words nest are one topic.
FOLD_OVERLAP = 0.6


@dataclass(frozen=True)
class TrendItem:
    """What trend detection needs of a stored item."""

    at: datetime
    keyphrases: Sequence[str]
    title: str = ""
    link: str | None = None
    sentiment: float = 0.0


@dataclass
class Topic:
    phrase: str
    count: int  # items in the current window
    baseline: float  # expected count per window at the baseline rate (e)
    ratio: float
    score: float
    sentiment: float  # mean VADER compound score of the current window's items
    items: list[TrendItem] = field(default_factory=list)  # newest first

    def to_public(self, max_items: int = 3) -> dict[str, Any]:
        return {
            "phrase": self.phrase,
            "count": self.count,
            "baseline": round(self.baseline, 3),
            "ratio": round(self.ratio, 3),
            "score": round(self.score, 3),
            "sentiment": round(self.sentiment, 3),
            "items": [
                {"title": i.title, "link": i.link, "at": i.at.isoformat()}
                for i in self.items[:max_items]
            ],
        }


def score(count: int, baseline_count: int, baseline_windows: int) -> tuple[float, float, float]:
    """``(e, ratio, score)`` for a phrase seen in ``count`` items now and ``baseline_count`` before."""
    expected = baseline_count / baseline_windows
    ratio = (count + 1) / (expected + 1)
    z = (count - expected) / math.sqrt(expected + 1)
    return expected, ratio, z


def _title_key(item: TrendItem) -> str:
    return " ".join(item.title.lower().split()) or f"@{id(item)}"


def trending(
    items: Iterable[TrendItem],
    *,
    now: datetime,
    window: timedelta,
    baseline_windows: int = 7,
    min_count: int = 2,
    min_ratio: float = 1.5,
    min_score: float = 1.0,
    limit: int = 10,
) -> list[Topic]:
    """The trending topics of ``items`` at ``now`` (see the module docstring)."""
    current_start = now - window
    baseline_start = now - window * (baseline_windows + 1)
    current: dict[str, dict[str, TrendItem]] = defaultdict(dict)
    baseline: dict[str, set[str]] = defaultdict(set)
    for item in items:
        if item.at > now or item.at <= baseline_start:
            continue
        key = _title_key(item)
        in_current = item.at > current_start
        for phrase in set(item.keyphrases):
            if in_current:
                current[phrase].setdefault(key, item)
            else:
                baseline[phrase].add(key)
    candidates: list[Topic] = []
    for phrase, found in current.items():
        count = len(found)
        if count < min_count:
            continue
        expected, ratio, z = score(count, len(baseline.get(phrase, ())), baseline_windows)
        if ratio < min_ratio or z < min_score:
            continue
        newest = sorted(found.values(), key=lambda i: i.at, reverse=True)
        mean = sum(i.sentiment for i in newest) / count
        candidates.append(Topic(phrase, count, expected, ratio, z, mean, newest))
    # On a tie the longer phrase wins: "quantum battery" says more than "battery".
    candidates.sort(key=lambda t: (-t.score, -t.count, -len(t.phrase.split()), t.phrase))
    return _fold(candidates, limit)


def _fold(ranked: list[Topic], limit: int) -> list[Topic]:
    """Keep the best of each group of nested, co-occurring phrases."""
    kept: list[tuple[Topic, set[str], frozenset[str]]] = []
    for topic in ranked:
        words = set(topic.phrase.split())
        keys = frozenset(_title_key(i) for i in topic.items)
        duplicate = False
        for _other, other_words, other_keys in kept:
            nested = words <= other_words or other_words <= words
            overlap = len(keys & other_keys) / len(keys | other_keys)
            if nested and overlap >= FOLD_OVERLAP:
                duplicate = True
                break
        if not duplicate:
            kept.append((topic, words, keys))
            if len(kept) >= limit:
                break
    return [t for t, _, _ in kept]
