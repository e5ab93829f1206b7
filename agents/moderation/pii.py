"""PII detection and redaction: email addresses, phone numbers, payment cards.

Recall first, then precision: every format listed in docs/moderation.md is
found (tests/test_moderation_pii.py holds the list), while dates, times,
prices, versions, postcodes and short order numbers are left alone.

- cards: 13-19 digits, optionally grouped by spaces or dashes, that pass the
  Luhn check (a Luhn-invalid digit run is not a card);
- emails: ``local@domain.tld``;
- phones: international (``+`` or ``00`` and 8-15 digits in any grouping),
  North American (``(555) 123-4567``, ``555.123.4567``, ``+1 555 123 4567``,
  ten plain digits) and European national numbers with a trunk ``0``
  (``020 7946 0958``, ``030/1234567``, ``06-12345678``, ``01 23 45 67 89``).

Spans are found in one pass per kind; cards win over phones where they overlap.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MASKS = {"email": "[email]", "phone": "[phone]", "card": "[card]"}


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


_CARD = re.compile(r"(?<![\d\w])\d(?:[ -]?\d){12,18}(?![\d\w])")
_EMAIL = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9_][\w.%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w-])"
)
_GROUP = re.compile(r"\d+")
_NOTHING = re.compile(r"[^\d@]*\Z")
_SEP = r"[ .\-/]"
# A digit run glued to a decimal part ("3.0123456789") is a number, not a
# phone: every branch refuses ".<digit>" on either side (and _phone_ok a match
# that is one number with a decimal part).
_PHONE = re.compile(
    # international: +CC or 00CC, then groups (one may be in parentheses)
    r"(?<![\w+])(?<!\d[.,])(?:\+|00)[1-9]\d{0,3}(?:[ .\-/]?\(?\d{1,5}\)?){2,7}(?![\w]|[.,]\d)"
    # North American: optional +1/1, area code (parenthesized or not), 3, 4
    r"|(?<![\w+])(?<!\d[.,])(?:\+?1[ .\-]?)?(?:\(\d{3}\)[ ]?|\d{3}[ .\-]?)\d{3}[ .\-]?\d{4}(?![\w]|[.,]\d)"
    # European national numbers with a trunk 0, or the area code in parentheses
    rf"|(?<![\w+])(?<!\d[.,])(?:\(0\d{{1,4}}\)[ ]?|0\d{{1,4}}{_SEP}?)\d{{2,8}}(?:{_SEP}?\d{{2,8}}){{0,4}}(?![\w]|[.,]\d)"
)
_DECIMAL = re.compile(r"\d+[.,]\d+")
# Shapes that are dates or times, not phone numbers.
_DATE = re.compile(
    r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|^\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}(?!\d)|^\d{1,2}[-/.]\d{4}$"
)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _card_in(run: str) -> tuple[int, int] | None:
    """The longest Luhn-valid card number in a run of digit groups.

    The run may carry more than the card ("4111 1111 1111 1111 2 items"):
    trying each sequence of whole groups finds the card inside it.
    """
    digits = _digits(run)
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return 0, len(run)
    groups = [(g.start(), g.end()) for g in _GROUP.finditer(run)]
    best: tuple[int, int] | None = None
    for i in range(len(groups)):
        for j in range(len(groups) - 1, i - 1, -1):
            start, end = groups[i][0], groups[j][1]
            d = _digits(run[start:end])
            if len(d) < 13:
                break
            if len(d) <= 19 and luhn_valid(d) and (best is None or end - start > best[1] - best[0]):
                best = (start, end)
    return best


def _phone_ok(text: str) -> bool:
    if _DECIMAL.fullmatch(text):
        return False  # "0000012345.678901": a number with a decimal part
    digits = _digits(text)
    international = text.startswith(("+", "00"))
    if international:
        # E.164: at most 15 digits after the prefix ("00" is the prefix, not digits).
        return 8 <= len(digits) - (2 if text.startswith("00") else 0) <= 15
    if _DATE.match(text):
        return False
    if text.startswith(("0", "(0")):
        # A trunk 0 and at least 9 digits: shorter runs are dates (01.02.2024)
        # and references; longer than 12 is not a national number.
        return 9 <= len(digits) <= 12 and not digits.startswith("00")
    return len(digits) in (10, 11)


def has_candidates(text: str) -> bool:
    """Could ``text`` hold (part of) PII at all? False for text without digits or "@"."""
    return _NOTHING.match(text) is None


def find(text: str, kinds: Sequence[str] = ("email", "phone", "card")) -> list[Span]:
    """Non-overlapping PII spans in ``text``, in order."""
    if _NOTHING.match(text):  # most text has no digit and no "@": one C-speed scan
        return []
    spans: list[Span] = []
    if "card" in kinds:
        for m in _CARD.finditer(text):
            found = _card_in(m.group())
            if found is not None:
                spans.append(Span(m.start() + found[0], m.start() + found[1], "card"))
    if "email" in kinds and "@" in text:
        spans.extend(Span(m.start(), m.end(), "email") for m in _EMAIL.finditer(text))
    if "phone" in kinds:
        for m in _PHONE.finditer(text):
            if _phone_ok(m.group()) and not _overlaps(spans, m.start(), m.end()):
                spans.append(Span(m.start(), m.end(), "phone"))
    spans.sort(key=lambda s: s.start)
    return spans


def _overlaps(spans: list[Span], start: int, end: int) -> bool:
    return any(s.start < end and start < s.end for s in spans)


def redact(text: str, spans: list[Span]) -> str:
    """``text`` with each span replaced by its kind's mask."""
    if not spans:
        return text
    out: list[str] = []
    at = 0
    for span in spans:
        out.append(text[at : span.start])
        out.append(MASKS[span.kind])
        at = span.end
    out.append(text[at:])
    return "".join(out)


def mask(text: str, kinds: Sequence[str] = ("email", "phone", "card")) -> str:
    return redact(text, find(text, kinds))
