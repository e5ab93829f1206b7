"""Prompt assembly from persona fields and history."""

from __future__ import annotations

from agents.prompt import HistoryItem, build_messages, render_macros


def count(text: str) -> int:
    return len(text.split())


PERSONA = {
    "name": "Ada",
    "description": "{{char}} is a mathematician.",
    "personality": "precise",
    "scenario": "{{user}} visits {{char}}.",
}


def test_macros() -> None:
    assert (
        render_macros("{{char}} meets {{ USER }} <BOT> <USER>", char="A", user="B")
        == "A meets B A B"
    )


def test_default_system_prompt_uses_persona_fields_and_names() -> None:
    msgs = build_messages(
        PERSONA,
        [HistoryItem("user", "hi")],
        user_name="Bob",
        context_window=1000,
        reply_tokens=50,
        count_tokens=count,
    )
    system = msgs[0].content
    assert msgs[0].role == "system"
    assert (
        "You are Ada" in system
        and "Ada is a mathematician." in system
        and "Bob visits Ada." in system
    )
    assert "precise" in system
    assert [(m.role, m.content) for m in msgs[1:]] == [("user", "hi")]


def test_custom_system_prompt_with_original_and_post_history() -> None:
    persona = {
        **PERSONA,
        "system_prompt": "Rules first. {{original}}",
        "post_history_instructions": "Answer {{user}} briefly.",
    }
    msgs = build_messages(
        persona,
        [HistoryItem("user", "hi")],
        user_name="Bob",
        context_window=1000,
        reply_tokens=50,
        count_tokens=count,
    )
    assert msgs[0].content.startswith("Rules first. You are Ada")
    assert msgs[-1].role == "system" and msgs[-1].content == "Answer Bob briefly."


def test_old_turns_are_dropped_to_fit_and_the_newest_kept() -> None:
    history = [
        HistoryItem("user" if i % 2 == 0 else "assistant", f"turn{i} " + "w " * 20)
        for i in range(40)
    ]
    msgs = build_messages(
        PERSONA, history, user_name="Bob", context_window=300, reply_tokens=50, count_tokens=count
    )
    kept = [m.content.split()[0] for m in msgs[1:]]
    assert kept[-1] == "turn39"
    assert "turn0" not in kept
    assert kept == [f"turn{i}" for i in range(40 - len(kept), 40)]  # a contiguous newest window
    assert sum(count(m.content) for m in msgs) <= 300 - 50


def test_a_huge_last_message_is_cut_not_fatal() -> None:
    msgs = build_messages(
        PERSONA,
        [HistoryItem("user", "x " * 10_000)],
        user_name="Bob",
        context_window=200,
        reply_tokens=50,
        count_tokens=count,
    )
    assert msgs[-1].role == "user" and 0 < len(msgs[-1].content) < 20_000


def test_greeting_opens_the_conversation() -> None:
    persona = {**PERSONA, "first_mes": "Welcome, {{user}}!"}
    msgs = build_messages(
        persona,
        [HistoryItem("user", "hi")],
        user_name="Bob",
        context_window=1000,
        reply_tokens=50,
        count_tokens=count,
    )
    assert [(m.role, m.content) for m in msgs[1:]] == [
        ("assistant", "Welcome, Bob!"),
        ("user", "hi"),
    ]


def test_extra_instructions_are_appended_to_the_system_prompt() -> None:
    msgs = build_messages(
        PERSONA,
        [HistoryItem("user", "hi")],
        user_name="Bob",
        context_window=1000,
        reply_tokens=50,
        count_tokens=count,
        extra_instructions="Speak French.",
    )
    assert msgs[0].content.endswith("Speak French.")


def test_a_huge_reply_budget_does_not_starve_the_prompt() -> None:
    history = [HistoryItem("user", "please tell me about your ship")]
    msgs = build_messages(
        PERSONA,
        history,
        user_name="Bob",
        context_window=2048,
        reply_tokens=2048,
        count_tokens=count,
    )
    assert msgs[-1].content == "please tell me about your ship"
