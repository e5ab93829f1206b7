"""Rule-based fact extraction."""

from __future__ import annotations

import pytest

from agents.extraction import extract_facts


def _by_key(text: str) -> dict[str, str]:
    return {f.key: f.text for f in extract_facts(text, user="Bob")}


@pytest.mark.parametrize(
    ("text", "key", "fact"),
    [
        ("Hi! My name is Robert, but call me Bob.", "name", "Bob's name is Robert"),
        ("Hi! My name is Robert, but call me Bob.", "nickname", "Bob likes to be called Bob"),
        ("I'm 34 years old.", "age", "Bob is 34 years old"),
        ("I live in Lyon and I work as a nurse.", "home", "Bob lives in Lyon"),
        ("I live in Lyon and I work as a nurse.", "job", "Bob works as nurse"),
        ("I work at the city hospital.", "employer", "Bob works at the city hospital"),
        ("My dog is called Rex.", "relation:dog", "Bob's dog is Rex"),
        (
            "I really love sailing in the summer.",
            "likes:sailing in the summer",
            "Bob likes sailing in the summer",
        ),
        ("I can't stand cilantro.", "dislikes:cilantro", "Bob dislikes cilantro"),
        ("My favorite color is green.", "favorite:color", "Bob's favorite color is green"),
        ("I'm allergic to peanuts!", "allergy:peanuts", "Bob is allergic to peanuts"),
        ("My birthday is on March 3rd.", "birthday", "Bob's birthday is March 3rd"),
    ],
)
def test_statements_about_oneself(text: str, key: str, fact: str) -> None:
    assert _by_key(text)[key] == fact


@pytest.mark.parametrize(
    "text",
    [
        "Do you live in Paris?",
        "If I lived in Paris I would be happy.",
        "I wish my name is Bond.",
        "What is your favorite color?",
        "",
    ],
)
def test_questions_and_hypotheticals_are_not_facts(text: str) -> None:
    assert extract_facts(text) == []


def test_a_later_statement_wins_within_one_message() -> None:
    facts = _by_key("I live in Lyon. Actually no, I live in Paris now.")
    assert facts["home"] == "Bob lives in Paris now"


def test_keys_let_a_changed_fact_supersede_the_old_one() -> None:
    before = extract_facts("I live in Lyon.")
    after = extract_facts("I live in Paris.")
    assert [f.key for f in before] == [f.key for f in after] == ["home"]
    assert before[0].text != after[0].text
