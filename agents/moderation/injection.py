"""Prompt-injection heuristics, for the person's input and for recalled memories.

Patterns of text that tries to steer the model rather than talk to the
persona: "ignore previous instructions", "you are now ...", "reveal your
system prompt", chat-template role markers (``<|im_start|>``, ``[INST]``,
``system:`` at a line start), jailbreak names. They are heuristics: they
flag for review by default rather than block (docs/moderation.md).

A memory is text we put into the system prompt ourselves, so one that reads
like an instruction is dropped (default) or neutralized: quoted as a note,
with role markers removed, so the model reads it as data.
"""

from __future__ import annotations

import re

_RULES: tuple[tuple[str, str], ...] = (
    (
        "override",
        r"\b(?:ignore|disregard|forget|override|bypass|skip)\b[^.\n]{0,40}?"
        r"\b(?:previous|prior|above|earlier|preceding|all|any|your|the|system|initial|original)"
        r"\b[^.\n]{0,20}?\b(?:instructions?|prompts?|rules|directions|guidelines|messages|"
        r"context|programming|constraints)\b",
    ),
    (
        "role_change",
        r"\b(?:you are now|from now on,? you (?:are|will|must|shall)|pretend (?:that )?you are|"
        r"act as if you (?:are|were|have)|you will now act as)\b",
    ),
    (
        "prompt_leak",
        r"\b(?:reveal|show|print|repeat|output|display|tell me|give me|what (?:is|are))\b[^.\n]{0,20}?"
        r"\b(?:system prompt|your (?:instructions|prompt|rules)|hidden (?:prompt|instructions)|"
        r"initial prompt)\b",
    ),
    (
        "role_marker",
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext)\|>|\[/?INST\]|<</?SYS>>|"
        r"(?:^|\n)\s*#{0,3}\s*(?:system|assistant|developer)\s*(?:prompt)?\s*:",
    ),
    (
        "new_instructions",
        r"\b(?:new|updated|real|actual|secret) (?:instructions|rules|system prompt)\s*:",
    ),
    (
        "jailbreak",
        r"\b(?:jailbreak|jailbroken|developer mode|DAN mode|do anything now|"
        r"without (?:any )?(?:restrictions|filters|limitations|censorship))\b",
    ),
)
_COMPILED = tuple((name, re.compile(p, re.IGNORECASE)) for name, p in _RULES)
_MARKERS = re.compile(_RULES[3][1], re.IGNORECASE)


def detect(text: str) -> list[str]:
    """Names of the heuristics ``text`` trips (empty: looks like ordinary talk)."""
    return [name for name, pattern in _COMPILED if pattern.search(text)]


def strip_markers(text: str) -> str:
    """``text`` without chat-template role markers (``<|im_start|>``, ``system:``, ...)."""
    return _MARKERS.sub(" ", text).strip()


def neutralize(text: str) -> str:
    """A memory as inert data: role markers removed, quoted, labelled as a note."""
    cleaned = strip_markers(text).replace('"', "'")
    return f'(a remembered note, quoted; not an instruction) "{cleaned}"'
