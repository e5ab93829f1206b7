"""Moderating a reply while it streams: a filter with a small hold-back buffer.

The turn engine hands every coalesced delta to :meth:`OutputFilter.feed` and
sends only what comes back. The filter releases text up to the last point
where no PII or profanity match can still be growing, masks (or blocks) what
it releases, and holds the rest:

- the last word (after the last whitespace) is held until the next
  whitespace: an email, a card without spaces, a word of the list;
- a trailing run of digits and number separators (``+ ( ) . - / space``) is
  held until a letter or other character ends it: a phone number or card
  written in groups (of a longer run, only its last ``MAX_PII_SPAN``
  characters);
- a word that can start a two-word list entry is held one word more.

So a client sees text about one word late, never a half-masked number, and
the stored reply is exactly what was sent. A run longer than ``MAX_HOLD``
without any boundary is released anyway (a stream of 256 characters with
no space is not a phone number; it is checked again as a whole at the end).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agents.moderation import pii, profanity

MAX_HOLD = 256
# The longest phone or card number written in groups ("+44 (0)20 7946 0958",
# "4111 1111 1111 1111 111"): in a longer run of numbers only this much of
# its end can still grow into a match, so only this much is held.
MAX_PII_SPAN = 32
_NUMERIC = frozenset("0123456789 \t\r\n-.()+/")


@dataclass
class Hit:
    """One thing a check found in the reply: what, and what the policy does."""

    category: str
    action: str
    kinds: list[str] = field(default_factory=list)


def safe_cut(text: str) -> int:
    """How much of ``text`` no PII or profanity match can extend past."""
    n = len(text)
    word = n
    while word > 0 and not text[word - 1].isspace():
        word -= 1
    num = n
    digit = False
    while num > 0 and text[num - 1] in _NUMERIC:
        if text[num - 1].isdigit():
            digit = True
        num -= 1
    if not digit:
        return word
    if 0 < num < n and (text[num - 1].isalnum() or text[num - 1] == "_") and text[num].isdigit():
        # Digits glued to a letter ("w0", "mp3") cannot begin a phone or card
        # number: the run that matters starts after them, if there is one.
        while num < n and text[num].isdigit():
            num += 1
        if not any(ch.isdigit() for ch in text[num:]):
            return word
    if n - num > MAX_PII_SPAN:
        num = _cut_inside_run(text, num, n)
    return min(word, num)


def _cut_inside_run(text: str, start: int, end: int) -> int:
    """A long run of numbers ("12.5 13.75 14 ..."): release all but its last
    ``MAX_PII_SPAN`` characters, at a space that no PII found in the run
    straddles, so a reply full of numbers streams about one number late."""
    spans = pii.find(text[start:end])
    for i in range(end - MAX_PII_SPAN, start, -1):
        if text[i - 1].isspace() and not any(start + s.start < i < start + s.end for s in spans):
            return i
    return start


class OutputFilter:
    """One reply's filter; created per reply by the moderation service.

    ``pii_action``/``profanity_action`` are the policy's output actions
    (``allow`` switches the check off). ``final_check`` runs on the whole
    reply at the end (toxicity) and returns the hits it found.
    """

    def __init__(
        self,
        *,
        pii_action: str = "allow",
        pii_kinds: tuple[str, ...] = ("email", "phone", "card"),
        profanity_action: str = "allow",
        final_check: Callable[[str], Awaitable[list[Hit]]] | None = None,
    ) -> None:
        self.pii_action = pii_action
        self.pii_kinds = tuple(pii_kinds) or ("email", "phone", "card")
        self.profanity_action = profanity_action
        self.final_check = final_check
        self.hits: list[Hit] = []
        self.blocked: str | None = None  # the error code once a block action fired
        self._held = ""
        self._released: list[str] = []  # what was sent (masked), for the final check
        self._stopped = ""  # the segment a block kept from the client

    def excerpt(self) -> str:
        """What the reply said, for a reviewer: the text sent and the part that was stopped."""
        return "".join([*self._released, self._stopped])

    @property
    def masked(self) -> bool:
        return any(h.action == "mask" for h in self.hits)

    def feed(self, delta: str) -> str:
        """Take a delta; return the text that may be shown now (maybe empty)."""
        if self.blocked is not None:
            return ""
        text = self._held + delta
        cut = safe_cut(text)
        while self.profanity_action != "allow" and cut > 0:
            # Hold every trailing word that may begin a two-word entry, so a
            # pair is never split across two releases.
            start = profanity.ends_with_phrase_start(text[:cut].rstrip())
            if start is None:
                break
            cut = start
        if cut == 0 and len(text) > MAX_HOLD:
            cut = len(text) - MAX_HOLD // 4
        self._held = text[cut:]
        return self._check(text[:cut]) if cut else ""

    async def end(self) -> str:
        """The reply is complete: release the rest and run the end-of-reply check."""
        if self.blocked is not None:
            return ""
        tail = self._check(self._held) if self._held else ""
        self._held = ""
        if self.final_check is not None and self.blocked is None:
            found = await self.final_check("".join(self._released))
            self.hits.extend(found)
            block = next((h for h in found if h.action == "block"), None)
            if block is not None:
                self._block(block)
        return "" if self.blocked is not None else tail

    def drain(self) -> str:
        """The reply failed midway: release what is held, except a fragment that
        may be the start of a phone, card or email (it is dropped, not shown)."""
        if self.blocked is not None or not self._held:
            return ""
        held, self._held = self._held, ""
        if not pii.has_candidates(held):
            return self._check(held)
        cut = safe_cut(held)
        return self._check(held[:cut]) if cut else ""

    def _check(self, segment: str) -> str:
        out = segment
        if self.pii_action != "allow":
            spans = pii.find(out, self.pii_kinds)
            if spans:
                hit = Hit("pii", self.pii_action, sorted({s.kind for s in spans}))
                self.hits.append(hit)
                if hit.action == "block":
                    self._block(hit, pii.redact(out, spans))
                    return ""
                if hit.action == "mask":
                    out = pii.redact(out, spans)
        if self.profanity_action != "allow":
            found = profanity.find(out)
            if found:
                hit = Hit("profanity", self.profanity_action)
                self.hits.append(hit)
                if hit.action == "block":
                    self._block(hit, out)
                    return ""
                if hit.action == "mask":
                    out = profanity.mask(out, found)
        self._released.append(out)
        return out

    def _block(self, hit: Hit, segment: str = "") -> None:
        unavailable = "unavailable" in hit.kinds
        self.blocked = "moderation_unavailable" if unavailable else "moderation_blocked"
        self._stopped = segment
