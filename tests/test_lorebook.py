"""Lorebooks (Character Card ``character_book``): activation rules, budget, order, placement."""

from __future__ import annotations

from typing import Any

from agents.lorebook import DEFAULT_SCAN_DEPTH, parse_book, select_entries
from agents.prompt import HistoryItem, build_messages
from tests.conftest import ServerProcess, connect


def count(text: str) -> int:
    return max(1, len(text.split()))


def entry(content: str, keys: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "keys": keys or [],
        "content": content,
        "extensions": {},
        "enabled": True,
        "insertion_order": 0,
        **fields,
    }


def book(*entries: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"extensions": {}, "entries": list(entries), **fields}


def active(b: dict[str, Any], *messages: str, max_tokens: int | None = None) -> list[str]:
    found = select_entries(b, list(messages), count_tokens=count, max_tokens=max_tokens)
    return [*found.before_char, *found.after_char]


def test_keys_match_case_insensitively_unless_case_sensitive() -> None:
    b = book(
        entry("Avalon is an island.", ["Avalon"]),
        entry("NASA is an agency.", ["NASA"], case_sensitive=True),
    )
    assert active(b, "tell me about AVALON") == ["Avalon is an island."]
    assert active(b, "what does nasa do?") == []
    assert active(b, "what does NASA do?") == ["NASA is an agency."]
    assert active(b, "nothing relevant") == []


def test_selective_entries_need_a_secondary_key_too() -> None:
    b = book(entry("The dragon of the north sleeps.", ["dragon"], selective=True,
                   secondary_keys=["north", "winter"]))  # fmt: skip
    assert active(b, "a dragon!") == []
    assert active(b, "a dragon in winter") == ["The dragon of the north sleeps."]
    # not selective: secondary keys are ignored
    b["entries"][0]["selective"] = False
    assert active(b, "a dragon!") == ["The dragon of the north sleeps."]


def test_constant_entries_are_always_in_and_disabled_ones_never() -> None:
    b = book(
        entry("The year is 1890.", constant=True),
        entry("Secret lore.", ["secret"], enabled=False),
        entry("Also off.", constant=True, enabled=False),
    )
    assert active(b, "hello") == ["The year is 1890."]
    assert active(b, "tell me the secret") == ["The year is 1890."]


def test_only_the_last_scan_depth_messages_are_scanned() -> None:
    b = book(entry("Lore of the castle.", ["castle"]), scan_depth=2)
    assert active(b, "the castle", "ok", "sure") == []
    assert active(b, "the castle", "ok") == ["Lore of the castle."]
    default = book(entry("Lore of the castle.", ["castle"]))
    assert active(default, "the castle", *["hm"] * (DEFAULT_SCAN_DEPTH - 1)) == [
        "Lore of the castle."
    ]
    assert active(default, "the castle", *["hm"] * DEFAULT_SCAN_DEPTH) == []


def test_insertion_order_puts_lower_values_first() -> None:
    b = book(
        entry("third", ["x"], insertion_order=30),
        entry("first", ["x"], insertion_order=-5),
        entry("second", ["x"], insertion_order=10),
    )
    assert active(b, "x") == ["first", "second", "third"]


def test_over_budget_the_lowest_priority_entries_go_first() -> None:
    b = book(
        entry("alpha words here now", ["x"], insertion_order=1, priority=5),  # 4 tokens
        entry("beta words here now", ["x"], insertion_order=2, priority=1),
        entry("gamma words here now", ["x"], insertion_order=3, priority=9),
        token_budget=8,
    )
    found = select_entries(b, ["x"], count_tokens=count)
    assert found.after_char == ("alpha words here now", "gamma words here now")
    assert [e.content for e in found.dropped] == ["beta words here now"]
    # the caller's cap applies when it is smaller than the book's budget
    assert active(b, "x", max_tokens=4) == ["gamma words here now"]


def test_position_and_regex_and_decorators() -> None:
    b = book(
        entry("Before the character.", ["x"], position="before_char"),
        entry("After the character.", ["x"], position="after_char"),
        entry("Regex hit.", [r"\bship(s)?\b"], use_regex=True),
        entry("Broken regex is skipped.", ["(unclosed"], use_regex=True),
        entry("@@activate\nForced on.", ["never-said"]),
        entry("@@dont_activate\nForced off.", ["x"]),
        entry("@@exclude_keys calm\nStorm lore.", ["storm"]),
        entry("@@position before_desc\n@@additional_keys harbour\nHarbour lore.", ["dock"]),
    )
    found = select_entries(b, ["x ships in the harbour"], count_tokens=count)
    assert found.before_char == ("Before the character.", "Harbour lore.")
    assert found.after_char == ("After the character.", "Regex hit.", "Forced on.")
    assert active(b, "a storm") == ["Forced on.", "Storm lore."]
    assert active(b, "a calm storm") == ["Forced on."]
    assert not any("@@" in text for text in active(b, "x ships storm dock"))


def test_recursive_scanning_lets_entries_trigger_entries() -> None:
    entries = (
        entry("Camelot is ruled by Arthur.", ["camelot"]),
        entry("Arthur is king.", ["arthur"]),
    )
    assert active(book(*entries), "camelot") == ["Camelot is ruled by Arthur."]
    assert active(book(*entries, recursive_scanning=True), "camelot") == [
        "Camelot is ruled by Arthur.",
        "Arthur is king.",
    ]


def test_malformed_books_are_ignored() -> None:
    assert parse_book(None) is None
    assert parse_book({"entries": "nope"}) is None
    assert parse_book({"entries": [1, {"content": ""}, {"keys": "x"}]}) is None
    weird = {"entries": [{"keys": "sun", "content": "Hot.", "insertion_order": "high"}]}
    assert active(weird, "the sun") == ["Hot."]


PERSONA = {
    "name": "Nova",
    "description": "A ship's AI.",
    "personality": "dry",
    "character_book": book(
        entry("{{char}} remembers the Kestrel crash.", ["kestrel"], position="before_char"),
        entry("The crew calls {{user}} captain.", constant=True),
    ),
}


def test_entries_are_placed_around_the_character_definition() -> None:
    msgs = build_messages(
        PERSONA,
        [HistoryItem("user", "what happened to the Kestrel?")],
        user_name="Bob",
        context_window=1000,
        reply_tokens=50,
        count_tokens=count,
    )
    system = msgs[0].content
    before = system.index("Nova remembers the Kestrel crash.")
    description = system.index("A ship's AI.")
    after = system.index("The crew calls Bob captain.")
    assert before < description < system.index("Nova's personality: dry") < after
    quiet = build_messages(
        PERSONA,
        [HistoryItem("user", "hello")],
        user_name="Bob",
        context_window=1000,
        reply_tokens=50,
        count_tokens=count,
    )[0].content
    assert "Kestrel" not in quiet and "captain" in quiet


def test_a_custom_system_prompt_still_gets_the_entries() -> None:
    custom = {**PERSONA, "system_prompt": "Be Nova."}
    system = build_messages(
        custom,
        [HistoryItem("user", "kestrel")],
        user_name="Bob",
        context_window=1000,
        reply_tokens=50,
        count_tokens=count,
    )[0].content
    assert system.split("\n\n") == [
        "Nova remembers the Kestrel crash.",
        "Be Nova.",
        "The crew calls Bob captain.",
    ]
    with_original = {**PERSONA, "system_prompt": "{{original}}\n\nBe terse."}
    system = build_messages(
        with_original,
        [HistoryItem("user", "kestrel")],
        user_name="Bob",
        context_window=1000,
        reply_tokens=50,
        count_tokens=count,
    )[0].content
    assert system.count("Kestrel crash") == 1 and system.endswith("Be terse.")


def test_lore_never_takes_more_than_a_quarter_of_the_window() -> None:
    huge = {**PERSONA, "character_book": book(entry("lore " * 400, constant=True))}
    msgs = build_messages(
        huge,
        [HistoryItem("user", "hi")],
        user_name="Bob",
        context_window=1000,
        reply_tokens=50,
        count_tokens=count,
    )
    assert "lore" not in msgs[0].content and msgs[-1].content == "hi"


async def test_a_card_lorebook_reaches_the_model_through_the_server(
    server: ServerProcess,
) -> None:
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "Lore Keeper",
            "description": "Keeper of the archive.",
            "personality": "",
            "scenario": "",
            "first_mes": "",
            "mes_example": "",
            "creator_notes": "",
            "system_prompt": "",
            "post_history_instructions": "",
            "alternate_greetings": [],
            "tags": [],
            "creator": "",
            "character_version": "",
            "extensions": {},
            "character_book": book(
                entry("The Zephyr Gate opens at dawn.", ["zephyr"]),
                entry("Unrelated lore about moons.", ["moon"]),
            ),
        },
    }
    persona = server.create_persona(**card)
    c = await connect(server)
    await c.start(persona["id"], user="lore-user")
    await c.send({"type": "message.create", "id": "l1", "text": "[echo] tell me of the Zephyr"})
    done = await c.until("response.done", timeout=30)
    await c.close()
    # [echo]: the fake model answers with the system prompt it received
    assert "The Zephyr Gate opens at dawn." in done["text"]
    assert "Keeper of the archive." in done["text"]
    assert "moons" not in done["text"]
