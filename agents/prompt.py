"""Prompt assembly: persona, lorebook, memories, rolling summary and recent history, in the window.

Follows the Character Card conventions: ``{{char}}``/``{{user}}`` macros,
``system_prompt`` replacing the default framing (``{{original}}`` inserts the
default), ``post_history_instructions`` placed after the history.

The system message is, in order (docs/memory.md):

1. the framing sentence, then the card's ``character_book`` entries with
   ``position: before_char`` (agents/lorebook.py), the character definition
   (description, personality, scenario), the ``after_char`` entries and the
   example dialogue. A custom ``system_prompt`` without ``{{original}}`` gets
   the ``before_char`` entries in front and the ``after_char`` ones after it;
2. what the persona remembers about the person (recalled memories);
3. the rolling summary of the older part of the conversation
   (agents/summaries.py): the history given here then starts after the last
   message the summary covers;
4. per-reply instructions.

Then as much recent history as fits, newest kept first. Lorebook entries are
activated by the last messages of the history and take at most a quarter of
the window (less if the book's ``token_budget`` says so). Assembly never fails
on overflow: the oldest turns are left out (the summarizer folds them into the
summary in the background) and the last turn is cut if it alone is too long.
:func:`assemble` also reports what it kept, so the caller can plan the next
summary; :func:`build_messages` returns just the messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.llm.base import ChatMessage
from agents.lorebook import LoreInsert, select_entries

_MACROS = re.compile(r"\{\{\s*(char|user|original)\s*\}\}|<BOT>|<USER>", re.IGNORECASE)
_ORIGINAL = re.compile(r"\{\{\s*original\s*\}\}", re.IGNORECASE)

# Chat-template tokens around each message, roughly.
MESSAGE_OVERHEAD = 4
# Lorebook entries never take more than this share of the context window.
LORE_WINDOW_FRACTION = 0.25
# Nor does the rolling summary: a long one keeps its end (the newest notes).
SUMMARY_WINDOW_FRACTION = 0.25
SUMMARY_HEADING = "Summary of the earlier conversation:"


@dataclass(frozen=True)
class HistoryItem:
    """One stored message; ``id`` (the message id) lets summaries record what they cover."""

    role: str
    content: str
    id: str | None = None


@dataclass(frozen=True)
class Prompt:
    """The assembled messages and what assembly decided about the history.

    ``costs[i]`` is the token cost of ``history[i]`` (0 for items that never go
    in: other roles, empty texts); ``kept`` is how many of the newest history
    items are in ``messages``; ``history_budget`` is the room the history had.
    """

    messages: list[ChatMessage]
    kept: int
    costs: tuple[int, ...]
    history_budget: int
    lore: LoreInsert = field(default_factory=LoreInsert)


def render_macros(text: str, *, char: str, user: str, original: str = "") -> str:
    """Replace ``{{char}}``, ``{{user}}`` (and V1's ``<BOT>``/``<USER>``) and ``{{original}}``."""

    def _sub(match: re.Match[str]) -> str:
        token = (match.group(1) or match.group(0)).lower().strip("<>")
        if token in ("char", "bot"):
            return char
        if token == "user":
            return user
        return original

    return _MACROS.sub(_sub, text)


def default_system_prompt(
    persona: dict[str, Any], *, before_char: Sequence[str] = (), after_char: Sequence[str] = ()
) -> str:
    """The framing sentence and the character definition, with lorebook entries around it."""
    parts = [
        "You are {{char}}. Stay in character and reply to {{user}} as {{char}} would, "
        "conversationally and concisely."
    ]
    parts.extend(before_char)
    for label, key in (
        ("", "description"),
        ("{{char}}'s personality: ", "personality"),
        ("Scenario: ", "scenario"),
    ):
        value = str(persona.get(key) or "").strip()
        if value:
            parts.append(label + value)
    parts.extend(after_char)
    examples = str(persona.get("mes_example") or "").strip()
    if examples:
        parts.append("Examples of how {{char}} talks:\n" + examples.replace("<START>", "").strip())
    return "\n\n".join(parts)


def assemble(
    persona: dict[str, Any],
    history: Sequence[HistoryItem],
    *,
    user_name: str,
    context_window: int,
    reply_tokens: int,
    count_tokens: Callable[[str], int],
    extra_instructions: str | None = None,
    memories: Sequence[str] = (),
    summary: str | None = None,
) -> Prompt:
    """Assemble the prompt (see the module docstring) and report what was kept.

    ``history`` is oldest first and, when ``summary`` is given, starts after
    the last message the summary covers.
    """
    char = str(persona.get("name") or "Assistant")

    def render(text: str) -> str:
        return render_macros(text, char=char, user=user_name)

    lore = select_entries(
        persona.get("character_book"),
        [h.content for h in history if h.role in ("user", "assistant")],
        count_tokens=count_tokens,
        max_tokens=int(context_window * LORE_WINDOW_FRACTION),
        render=render,
    )
    custom = str(persona.get("system_prompt") or "").strip()
    default = default_system_prompt(
        persona, before_char=lore.before_char, after_char=lore.after_char
    )
    if custom:
        system = custom
        if not _ORIGINAL.search(custom):
            # No slot for the definition: the entries still belong around the character.
            system = "\n\n".join([*lore.before_char, custom, *lore.after_char])
    else:
        system = default
    system = render_macros(system, char=char, user=user_name, original=render(default))
    whole = (summary or "").strip()
    summary = _fit_summary(whole, int(context_window * SUMMARY_WINDOW_FRACTION), count_tokens)
    # Summaries are memories too: a recalled copy of this one is not repeated.
    memories = [m for m in memories if m.strip() and m.strip() not in (whole, summary)]
    if memories:
        remembered = "\n".join(f"- {m}" for m in memories)
        system += f"\n\nWhat {char} remembers about {user_name}:\n{remembered}"
    if summary:
        system += f"\n\n{SUMMARY_HEADING}\n{summary}"
    if extra_instructions:
        system += "\n\n" + extra_instructions.strip()
    post = render(str(persona.get("post_history_instructions") or "").strip())

    # A huge reply budget must not starve the prompt: keep at least half the window.
    reply_tokens = min(reply_tokens, context_window // 2)
    overhead = MESSAGE_OVERHEAD
    budget = context_window - reply_tokens - count_tokens(system) - overhead
    if post:
        budget -= count_tokens(post) + overhead
    history_budget = budget

    costs = [
        count_tokens(item.content) + overhead
        if item.role in ("user", "assistant") and item.content
        else 0
        for item in history
    ]
    kept: list[ChatMessage] = []
    kept_items = 0
    for item, cost in zip(reversed(history), reversed(costs), strict=True):
        if not cost:
            kept_items += 1  # never sent, never in the way
            continue
        if cost > budget:
            if not kept:  # the newest turn must survive: keep its tail
                keep_chars = max(1, budget - overhead) * 3
                kept.append(ChatMessage(item.role, item.content[-keep_chars:]))  # type: ignore[arg-type]
                kept_items += 1
            break
        budget -= cost
        kept_items += 1
        kept.append(ChatMessage(item.role, item.content))  # type: ignore[arg-type]
    kept.reverse()
    greeting = render(str(persona.get("first_mes") or "").strip())
    if (
        greeting
        and not summary  # the opening of a summarized conversation is long gone
        and (not kept or kept[0].role == "user")
        and count_tokens(greeting) + overhead <= budget
    ):
        kept.insert(0, ChatMessage("assistant", greeting))

    messages = [ChatMessage("system", system), *kept]
    if post:
        messages.append(ChatMessage("system", post))
    return Prompt(messages, kept_items, tuple(costs), history_budget, lore)


def _fit_summary(summary: str, limit: int, count_tokens: Callable[[str], int]) -> str:
    """The summary, or its newest lines (its tail) when it is longer than ``limit`` tokens."""
    if not summary or count_tokens(summary) <= limit:
        return summary
    lines = summary.splitlines()
    while len(lines) > 1 and count_tokens("\n".join(lines)) > limit:
        lines.pop(0)
    text = "\n".join(lines)
    if count_tokens(text) > limit:  # one long paragraph: keep its end
        text = "…" + text[-max(1, limit) * 3 :]
    return text


def build_messages(
    persona: dict[str, Any],
    history: Sequence[HistoryItem],
    *,
    user_name: str,
    context_window: int,
    reply_tokens: int,
    count_tokens: Callable[[str], int],
    extra_instructions: str | None = None,
    memories: Sequence[str] = (),
    summary: str | None = None,
) -> list[ChatMessage]:
    """Return the messages to send: system prompt, as much recent history as fits, post-history.

    The newest turns are kept; older ones are dropped first (the summarizer
    folds them into the rolling summary). The last user turn is always kept,
    cut if it alone is too long, so assembly never fails on overflow.
    """
    return assemble(
        persona,
        history,
        user_name=user_name,
        context_window=context_window,
        reply_tokens=reply_tokens,
        count_tokens=count_tokens,
        extra_instructions=extra_instructions,
        memories=memories,
        summary=summary,
    ).messages
