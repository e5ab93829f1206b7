"""Profanity: the word list of ``better-profanity``, matched per word in O(1).

better-profanity's own ``censor()`` compares every word against ~900
leetspeak-expanding patterns (milliseconds per sentence): too slow for a
check that runs on every streamed delta. We take its word list (the data is
what we want from the package) and match whole words after undoing the
common leetspeak substitutions it knows (``@``/``4`` -> a, ``0`` -> o, ...).
Two-word entries ("blow job") match as a pair of words or written together.

The word list is read from the installed package without importing it
(importing builds better-profanity's ~5 MB pattern set at once).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

MASK = "****"
_WORD = re.compile(r"[A-Za-z0-9@$*']+")
# better-profanity's CHARS_MAPPING, inverted: a written variant -> the letter.
_LEET = str.maketrans(
    {"@": "a", "4": "a", "1": "i", "0": "o", "3": "e", "$": "s", "5": "s", "7": "t"}
)


@dataclass(frozen=True)
class Words:
    single: frozenset[str]
    pairs: frozenset[tuple[str, str]]
    starts: frozenset[str]  # first words of pairs: a stream holds them back one word


def _normal(word: str) -> str:
    return word.lower().strip("'*").translate(_LEET)


@lru_cache(maxsize=1)
def words() -> Words:
    spec = importlib.util.find_spec("better_profanity")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "profanity checks need the package 'better-profanity' (a dependency of salon); "
            "reinstall salon or set the policy's profanity actions to 'allow'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "profanity_wordlist.txt"
    single: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.strip().lower()
        if not entry:
            continue
        parts = re.split(r"[\s\-_]+", entry)
        single.add(_normal("".join(parts)))
        if len(parts) == 2:
            pairs.add((_normal(parts[0]), _normal(parts[1])))
        elif len(parts) == 1:
            single.add(_normal(entry))
    return Words(frozenset(single), frozenset(pairs), frozenset(a for a, _ in pairs))


def find(text: str) -> list[tuple[int, int]]:
    """Spans of profane words (and two-word phrases) in ``text``."""
    table = words()
    found: list[tuple[int, int]] = []
    previous: tuple[int, str] | None = None
    for m in _WORD.finditer(text):
        word = m.group()
        if word.isdigit():  # "455" is a number, not leetspeak for a swear word
            previous = None
            continue
        norm = _normal(word)
        if previous is not None and (previous[1], norm) in table.pairs:
            found.append((previous[0], m.end()))  # the pair first: "bull shit" is one entry
            previous = None
            continue
        if norm in table.single:
            found.append((m.start(), m.end()))
            previous = None
            continue
        previous = (m.start(), norm) if norm in table.starts else None
    return found


def ends_with_phrase_start(text: str) -> int | None:
    """Where the last word of ``text`` starts, if it may begin a two-word entry."""
    tail = text[-40:]
    last = None
    for last in _WORD.finditer(tail):  # noqa: B007 - the loop finds the last word
        continue
    if last is None or _normal(last.group()) not in words().starts:
        return None
    return len(text) - len(tail) + last.start()


def mask(text: str, spans: list[tuple[int, int]]) -> str:
    out: list[str] = []
    at = 0
    for start, end in spans:
        out.append(text[at:start])
        out.append(MASK)
        at = end
    out.append(text[at:])
    return "".join(out)
