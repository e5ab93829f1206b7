"""Prompt assembly: persona fields + recent history, inside the model's context.

Follows the Character Card conventions: ``{{char}}``/``{{user}}`` macros,
``system_prompt`` replacing the default framing (``{{original}}`` inserts the
default), ``post_history_instructions`` placed after the history. The memory
issue extends this with recalled memories and summaries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.llm.base import ChatMessage

_MACROS = re.compile(r"\{\{\s*(char|user|original)\s*\}\}|<BOT>|<USER>", re.IGNORECASE)


@dataclass(frozen=True)
class HistoryItem:
    role: str
    content: str


def render_macros(text: str, *, char: str, user: str, original: str = "") -> str:
    def _sub(match: re.Match[str]) -> str:
        token = (match.group(1) or match.group(0)).lower().strip("<>")
        if token in ("char", "bot"):
            return char
        if token == "user":
            return user
        return original

    return _MACROS.sub(_sub, text)


def default_system_prompt(persona: dict[str, Any]) -> str:
    parts = [
        "You are {{char}}. Stay in character and reply to {{user}} as {{char}} would, "
        "conversationally and concisely."
    ]
    for label, key in (
        ("", "description"),
        ("{{char}}'s personality: ", "personality"),
        ("Scenario: ", "scenario"),
    ):
        value = str(persona.get(key) or "").strip()
        if value:
            parts.append(label + value)
    examples = str(persona.get("mes_example") or "").strip()
    if examples:
        parts.append("Examples of how {{char}} talks:\n" + examples.replace("<START>", "").strip())
    return "\n\n".join(parts)


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
) -> list[ChatMessage]:
    """Return the messages to send: system prompt, as much recent history as fits, post-history.

    The newest turns are kept; older ones are dropped first (the memory layer
    summarizes them). The last user turn is always kept, cut if it alone is
    too long, so assembly never fails on overflow.
    """
    char = str(persona.get("name") or "Assistant")
    default = default_system_prompt(persona)
    custom = str(persona.get("system_prompt") or "").strip()
    system = custom if custom else default
    system = render_macros(
        system,
        char=char,
        user=user_name,
        original=render_macros(default, char=char, user=user_name),
    )
    if memories:
        remembered = "\n".join(f"- {m}" for m in memories)
        system += f"\n\nWhat {char} remembers about {user_name}:\n{remembered}"
    if extra_instructions:
        system += "\n\n" + extra_instructions.strip()
    post = render_macros(
        str(persona.get("post_history_instructions") or "").strip(), char=char, user=user_name
    )

    # A huge reply budget must not starve the prompt: keep at least half the window.
    reply_tokens = min(reply_tokens, context_window // 2)
    overhead = 4  # chat-template tokens around each message, roughly
    budget = context_window - reply_tokens - count_tokens(system) - overhead
    if post:
        budget -= count_tokens(post) + overhead

    kept: list[ChatMessage] = []
    greeting = render_macros(str(persona.get("first_mes") or "").strip(), char=char, user=user_name)
    for item in reversed(history):
        if item.role not in ("user", "assistant") or not item.content:
            continue
        cost = count_tokens(item.content) + overhead
        if cost > budget:
            if not kept:  # the newest turn must survive: keep its tail
                keep_chars = max(1, budget - overhead) * 3
                kept.append(ChatMessage(item.role, item.content[-keep_chars:]))  # type: ignore[arg-type]
            break
        budget -= cost
        kept.append(ChatMessage(item.role, item.content))  # type: ignore[arg-type]
    kept.reverse()
    if (
        greeting
        and (not kept or kept[0].role == "user")
        and count_tokens(greeting) + overhead <= budget
    ):
        kept.insert(0, ChatMessage("assistant", greeting))

    messages = [ChatMessage("system", system), *kept]
    if post:
        messages.append(ChatMessage("system", post))
    return messages
