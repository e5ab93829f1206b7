"""Lorebooks: a card's ``character_book`` entries, put into the prompt when the chat mentions them.

Character Card V2 (and V3) cards may carry a ``character_book``: entries of
background knowledge (people, places, lore) that are inserted into the prompt
only while the conversation is about them, so a large world costs context only
when it matters. This module implements the spec's activation rules
(docs/memory.md, "Lorebook"):

* An entry is **active** when it is ``enabled`` and either ``constant`` or one
  of its ``keys`` occurs in the last ``scan_depth`` messages. With
  ``selective``, one of its ``secondary_keys`` must occur as well (V2: "require
  a key from both"). Keys match as substrings, case-insensitively unless
  ``case_sensitive``; with V3's ``use_regex`` they are regular expressions.
* With the book's ``recursive_scanning``, the text of active entries is scanned
  too (a few rounds), so one entry can pull in another.
* Active entries are ordered by ``insertion_order`` (lower = earlier in the
  prompt, the spec's "inserted higher"). When their tokens exceed the book's
  ``token_budget`` (and at most the cap the caller gives), entries with the
  lowest ``priority`` are dropped first (ties: the latest in the order).
* ``position`` ``before_char`` entries go before the character definition,
  everything else after it (agents/prompt.py places them).

V3 content decorators (``@@name value`` lines at the start of ``content``) are
never sent to the model. Of them ``@@activate``, ``@@dont_activate``,
``@@scan_depth``, ``@@additional_keys``, ``@@exclude_keys`` and ``@@position``
(``before_desc``/``after_desc``) are honoured; the others (``@@depth``,
``@@role``, ``@@activate_only_after``, ...) and ``@@@`` fallbacks are ignored.
A malformed book or entry is skipped, never an error: cards come from anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The spec leaves the default scan depth to the application; the last two
# exchanges (four messages) is what a person means by "what we are talking about".
DEFAULT_SCAN_DEPTH = 4
# Rounds of recursive scanning: enough for chains like place -> ruler -> house,
# bounded so a book whose entries mention each other cannot loop.
MAX_RECURSION = 3
_DECORATOR = re.compile(r"^@@(@?)([A-Za-z_]+)\s*(.*)$")


@dataclass(frozen=True)
class LoreEntry:
    """One entry of a character book, normalized (missing fields take the spec's defaults)."""

    content: str
    keys: tuple[str, ...] = ()
    secondary_keys: tuple[str, ...] = ()
    selective: bool = False
    constant: bool = False
    enabled: bool = True
    insertion_order: float = 0
    case_sensitive: bool = False
    use_regex: bool = False
    priority: float = 0
    position: str = "after_char"
    name: str = ""
    # from decorators
    force: bool | None = None  # @@activate (True) / @@dont_activate (False)
    scan_depth: int | None = None
    exclude_keys: tuple[str, ...] = ()
    index: int = 0  # place in the book: the last tie-breaker, keeps ordering deterministic


@dataclass(frozen=True)
class Lorebook:
    """A normalized ``character_book``."""

    entries: tuple[LoreEntry, ...] = ()
    scan_depth: int = DEFAULT_SCAN_DEPTH
    token_budget: int | None = None
    recursive_scanning: bool = False
    name: str = ""


@dataclass(frozen=True)
class LoreInsert:
    """The entries to insert, already ordered, split by position."""

    before_char: tuple[str, ...] = ()
    after_char: tuple[str, ...] = ()
    activated: tuple[LoreEntry, ...] = field(default=(), repr=False)
    dropped: tuple[LoreEntry, ...] = field(default=(), repr=False)

    def __bool__(self) -> bool:
        return bool(self.before_char or self.after_char)


def parse_book(book: Any) -> Lorebook | None:
    """Normalize a card's ``character_book`` (a dict as stored); ``None`` if it has no entries."""
    if not isinstance(book, Mapping):
        return None
    raw_entries = book.get("entries")
    if isinstance(raw_entries, Mapping):  # some exporters write {"0": {...}, "1": {...}}
        raw_entries = list(raw_entries.values())
    if not isinstance(raw_entries, list):
        return None
    entries = []
    for index, raw in enumerate(raw_entries):
        entry = _parse_entry(raw, index)
        if entry is not None:
            entries.append(entry)
    if not entries:
        return None
    depth = _int(book.get("scan_depth"))
    budget = _int(book.get("token_budget"))
    return Lorebook(
        entries=tuple(entries),
        scan_depth=depth if depth is not None and depth >= 0 else DEFAULT_SCAN_DEPTH,
        token_budget=budget if budget is not None and budget > 0 else None,
        recursive_scanning=bool(book.get("recursive_scanning")),
        name=str(book.get("name") or ""),
    )


def select_entries(
    book: Lorebook | Mapping[str, Any] | None,
    messages: Sequence[str],
    *,
    count_tokens: Callable[[str], int],
    max_tokens: int | None = None,
    render: Callable[[str], str] = lambda text: text,
) -> LoreInsert:
    """The entries of ``book`` that the conversation activates, ordered and within budget.

    ``messages`` are the conversation's texts, oldest first (only the last
    ``scan_depth`` are scanned). ``max_tokens`` caps the book's own
    ``token_budget`` (the caller keeps the prompt inside the context window);
    ``render`` is applied to each inserted text (``{{char}}``/``{{user}}`` macros).
    """
    if book is not None and not isinstance(book, Lorebook):
        book = parse_book(book)
    if book is None:
        return LoreInsert()
    active = _activate(book, messages)
    ordered = sorted(active, key=lambda e: (e.insertion_order, e.index))
    texts = {e.index: render(e.content) for e in ordered}
    budget = book.token_budget
    if max_tokens is not None:
        budget = max_tokens if budget is None else min(budget, max_tokens)
    dropped: list[LoreEntry] = []
    if budget is not None:
        costs = {e.index: count_tokens(texts[e.index]) for e in ordered}
        total = sum(costs.values())
        # Lowest priority goes first; among equals the one placed last in the prompt.
        for entry in sorted(ordered, key=lambda e: (e.priority, -e.insertion_order, -e.index)):
            if total <= budget:
                break
            dropped.append(entry)
            total -= costs[entry.index]
    gone = {e.index for e in dropped}
    kept = [e for e in ordered if e.index not in gone]
    return LoreInsert(
        before_char=tuple(texts[e.index] for e in kept if e.position == "before_char"),
        after_char=tuple(texts[e.index] for e in kept if e.position != "before_char"),
        activated=tuple(kept),
        dropped=tuple(dropped),
    )


def _activate(book: Lorebook, messages: Sequence[str]) -> list[LoreEntry]:
    recent = [m for m in messages if m]

    def window(depth: int) -> str:
        # A separator no key contains, so a key never matches across two messages.
        return "\n\x00\n".join(recent[-depth:]) if depth > 0 else ""

    active: dict[int, LoreEntry] = {}
    scanned_extra: list[str] = []
    for _ in range(MAX_RECURSION + 1):
        added = False
        for entry in book.entries:
            if entry.index in active or not entry.enabled or entry.force is False:
                continue
            depth = entry.scan_depth if entry.scan_depth is not None else book.scan_depth
            text = "\n\x00\n".join([window(depth), *scanned_extra])
            if entry.force or entry.constant or _matches(entry, text):
                active[entry.index] = entry
                added = True
        if not (book.recursive_scanning and added):
            break
        scanned_extra = [e.content for e in active.values()]
    return list(active.values())


def _matches(entry: LoreEntry, text: str) -> bool:
    if not text or not _any_key(entry, entry.keys, text):
        return False
    if entry.exclude_keys and _any_key(entry, entry.exclude_keys, text):
        return False
    if entry.selective and entry.secondary_keys:
        return _any_key(entry, entry.secondary_keys, text)
    return True


def _any_key(entry: LoreEntry, keys: Iterable[str], text: str) -> bool:
    for key in keys:
        if entry.use_regex:
            try:
                if re.search(key, text, 0 if entry.case_sensitive else re.IGNORECASE):
                    return True
            except re.error:  # a bad pattern in a card must not break replies
                continue
        elif entry.case_sensitive:
            if key in text:
                return True
        elif key.casefold() in text.casefold():
            return True
    return False


def _parse_entry(raw: Any, index: int) -> LoreEntry | None:
    if not isinstance(raw, Mapping):
        return None
    content, decorators = _split_decorators(str(raw.get("content") or ""))
    if not content.strip():
        return None
    keys = _strings(raw.get("keys", raw.get("key")))
    secondary = _strings(raw.get("secondary_keys", raw.get("keysecondary")))
    position = str(raw.get("position") or "after_char")
    force: bool | None = None
    scan_depth: int | None = None
    exclude: list[str] = []
    for name, value in decorators:
        if name == "activate":
            force = True
        elif name == "dont_activate":
            force = False
        elif name == "scan_depth":
            scan_depth = _int(value)
        elif name == "additional_keys":
            keys += _strings(value.split(","))
        elif name == "exclude_keys":
            exclude += _strings(value.split(","))
        elif name == "position" and value.strip() in ("before_desc", "after_desc"):
            position = "before_char" if value.strip() == "before_desc" else "after_char"
    return LoreEntry(
        content=content.strip(),
        keys=tuple(keys),
        secondary_keys=tuple(secondary),
        selective=bool(raw.get("selective")),
        constant=bool(raw.get("constant")),
        # The spec requires ``enabled``; an entry that omits it was meant to be used.
        enabled=raw.get("enabled", True) is not False,
        insertion_order=_number(raw.get("insertion_order", raw.get("order"))),
        case_sensitive=bool(raw.get("case_sensitive")),
        use_regex=bool(raw.get("use_regex")),
        priority=_number(raw.get("priority")),
        position="before_char" if position == "before_char" else "after_char",
        name=str(raw.get("name") or raw.get("comment") or ""),
        force=force,
        scan_depth=scan_depth if scan_depth is not None and scan_depth >= 0 else None,
        exclude_keys=tuple(exclude),
        index=index,
    )


def _split_decorators(content: str) -> tuple[str, list[tuple[str, str]]]:
    """V3: decorator lines open the content; they are instructions, not text for the model."""
    lines = content.split("\n")
    decorators: list[tuple[str, str]] = []
    while lines and lines[0].startswith("@@"):
        match = _DECORATOR.match(lines.pop(0).strip())
        if match and not match.group(1):  # @@@ fallbacks are not supported: skip them
            decorators.append((match.group(2).lower(), match.group(3)))
    return "\n".join(lines), decorators


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return []
    return [s.strip() for s in value if isinstance(s, str) and s.strip()]


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0
    try:
        number = float(value)
    except ValueError:
        return 0
    return number if number == number and abs(number) != float("inf") else 0
