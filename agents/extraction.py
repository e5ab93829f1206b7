"""Fact extraction: the extractor base and the rule-based default.

A :class:`FactExtractor` turns what a person said into facts about them.
Capable LLMs extract with structured output (agents/extraction_llm.py); the
embedded 135M model cannot, so :class:`RuleExtractor` picks up the statements
people most often make about themselves, and is the fallback whenever the
LLM extractor fails. Each fact has a ``key``: a new fact with the
same key *supersedes* the old one (valid_to is set) instead of duplicating it —
"I live in Paris" after "I live in Lyon" moves the person, it does not give
them two homes. Keys of open-ended facts (likes) include their object.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ExtractedFact:
    kind: str  # fact | preference | event
    key: str
    text: str  # third person, ready for the prompt: "{user}'s name is Ada"
    importance: float


_END = r"(?=[.!?,;]|\s+(?:and|but|so|because)\b|$)"
_WORDS = r"([A-Za-z][\w' -]{0,60}?)"

# (pattern, kind, key template, text template, importance)
_RULES: list[tuple[re.Pattern[str], str, str, str, float]] = [
    (
        re.compile(rf"\bmy name is {_WORDS}{_END}", re.I),
        "fact",
        "name",
        "{user}'s name is {0}",
        0.9,
    ),
    (
        re.compile(rf"\b(?:call me|i go by) {_WORDS}{_END}", re.I),
        "fact",
        "nickname",
        "{user} likes to be called {0}",
        0.8,
    ),
    (
        re.compile(r"\bi(?: am|'m) (\d{1,3}) years? old\b", re.I),
        "fact",
        "age",
        "{user} is {0} years old",
        0.7,
    ),
    (
        re.compile(rf"\bi (?:live|am living|'m living) in {_WORDS}{_END}", re.I),
        "fact",
        "home",
        "{user} lives in {0}",
        0.8,
    ),
    (
        re.compile(rf"\bi(?:'m| am) from {_WORDS}{_END}", re.I),
        "fact",
        "origin",
        "{user} is from {0}",
        0.7,
    ),
    (
        re.compile(rf"\bi (?:work as|am working as|'m working as) (?:an? )?{_WORDS}{_END}", re.I),
        "fact",
        "job",
        "{user} works as {0}",
        0.8,
    ),
    (
        re.compile(rf"\bi(?:'m| am) an? ({_WORDS[1:-1]}) by profession\b", re.I),
        "fact",
        "job",
        "{user} works as {0}",
        0.8,
    ),
    (
        re.compile(rf"\bi work (?:at|for) {_WORDS}{_END}", re.I),
        "fact",
        "employer",
        "{user} works at {0}",
        0.7,
    ),
    (
        re.compile(
            rf"\bmy (wife|husband|partner|girlfriend|boyfriend|son|daughter|dog|cat|brother|sister|mother|mom|father|dad)(?:'s name)? is (?:called |named )?{_WORDS}{_END}",
            re.I,
        ),
        "fact",
        "relation:{0}",
        "{user}'s {0} is {1}",
        0.8,
    ),
    (
        re.compile(rf"\bi (?:really )?(?:love|like|enjoy|adore) {_WORDS}{_END}", re.I),
        "preference",
        "likes:{0}",
        "{user} likes {0}",
        0.6,
    ),
    (
        re.compile(
            rf"\bi (?:really )?(?:hate|dislike|can't stand|cannot stand) {_WORDS}{_END}", re.I
        ),
        "preference",
        "dislikes:{0}",
        "{user} dislikes {0}",
        0.6,
    ),
    (
        re.compile(rf"\bmy favou?rite ([a-z ]{{2,30}}?) is {_WORDS}{_END}", re.I),
        "preference",
        "favorite:{0}",
        "{user}'s favorite {0} is {1}",
        0.6,
    ),
    (
        re.compile(rf"\bi(?:'m| am) allergic to {_WORDS}{_END}", re.I),
        "fact",
        "allergy:{0}",
        "{user} is allergic to {0}",
        0.9,
    ),
    (
        re.compile(rf"\bmy birthday is (?:on )?{_WORDS}{_END}", re.I),
        "event",
        "birthday",
        "{user}'s birthday is {0}",
        0.8,
    ),
]

# Statements about someone else, hypotheticals and questions are not facts about the speaker.
_SKIP = re.compile(r"\b(if|would|wish|maybe|perhaps|pretend|imagine)\b|\?\s*$", re.I)


def _norm(value: str) -> str:
    return re.sub(r"\s+", " ", value).strip(" '\"").rstrip(".")


def extract_facts(text: str, *, user: str = "the user") -> list[ExtractedFact]:
    """Facts the speaker states about themself in ``text``, one per key."""
    facts: dict[str, ExtractedFact] = {}
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
        if not sentence.strip() or _SKIP.search(sentence):
            continue
        for pattern, kind, key, template, importance in _RULES:
            for match in pattern.finditer(sentence):
                groups = [_norm(g) for g in match.groups()]
                if not all(groups):
                    continue
                fact_key = key.format(*(g.lower() for g in groups))
                facts[fact_key] = ExtractedFact(
                    kind=kind,
                    key=fact_key,
                    text=template.format(*groups, user=user),
                    importance=importance,
                )
    return list(facts.values())


@dataclass(frozen=True)
class SaidTurn:
    """One message of the person: its stored id and text."""

    id: str
    content: str


class FactExtractor(ABC):
    """Facts a person states about themself, each with the message it came from."""

    name: str = "base"

    @abstractmethod
    async def extract(
        self, turns: Sequence[SaidTurn], *, user: str, known: Mapping[str, str]
    ) -> list[tuple[ExtractedFact, str]]:
        """``known`` maps the keys of the person's live facts to their text, so an
        update can reuse a key (and supersede) instead of adding a twin."""


class RuleExtractor(FactExtractor):
    """The embedded default: the rules above, turn by turn."""

    name = "rules"

    async def extract(
        self, turns: Sequence[SaidTurn], *, user: str, known: Mapping[str, str]
    ) -> list[tuple[ExtractedFact, str]]:
        return [
            (fact, turn.id) for turn in turns for fact in extract_facts(turn.content, user=user)
        ]
