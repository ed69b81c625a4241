"""Rule-based topic tags and grade inference (seed 002's tagging)."""

from __future__ import annotations

import pytest

from engine.data.taxonomy import TOPICS, infer_grade, tag_row, topic_tags


@pytest.mark.parametrize("text,expected", [
    ("How do I add fractions like 1/2 + 1/3?", {"fractions", "addition"}),
    ("What is 2+3?", {"addition"}),
    ("Solve for x: 3x + 5 = 20", {"algebra"}),
    ("A shirt costs $20 and is on a 25% discount. What is the sale price?", {"money", "percentages"}),
    ("Find the area of a rectangle that is 4 cm by 6 cm.", {"geometry", "measurement"}),
    ("What is the probability of rolling a 6 on a fair die?", {"probability"}),
    ("Round 3,462 to the nearest hundred.", {"place_value"}),
    ("Simplify 2^3 * 2^2.", {"exponents", "algebra"}),
    ("What is the mean of 4, 8 and 9?", {"statistics"}),
    ("A school has 2103 pencils. It gives away 21 of them. How many pencils are left?", {"subtraction"}),
])
def test_topic_tags(text, expected):
    assert expected <= set(topic_tags(text))


def test_no_tags_for_plain_text_and_ordered_output():
    assert topic_tags("") == [] and topic_tags("Hello there") == []
    tags = topic_tags("Add 1/2 and 0.25, then multiply by 3.")
    assert tags == [t for t in TOPICS if t in tags]


@pytest.mark.parametrize("text,grade", [
    ("What is 2+3?", "1"),
    ("What is 7 - 4?", "1"),
    ("What is 234 + 589?", "3"),
    ("What is 12 times 11?", "3"),
    ("How do I add fractions like 1/2 + 1/3?", "4"),
    ("A shirt costs $20 and is on a 25% discount. What is the sale price?", "6"),
    ("Solve for x: 3x + 5 = 20", "7"),
    ("Factor the quadratic x^2 - 5x + 6.", "9"),
    ("Find the derivative of x^3.", "12"),
])
def test_grade_inference(text, grade):
    assert infer_grade(text) == grade


def test_tag_row_keeps_what_the_row_has():
    row = tag_row({"question": "How do I add fractions?", "topic_tags": ["fractions", "word problems"], "grade": "5"})
    assert row["topic_tags"] == ["fractions", "word problems", "addition"] and row["grade"] == "5"
    fixed = tag_row({"question": "What is 2+3?", "grade": "3"}, grade=6)
    assert fixed["grade"] == "6" and fixed["topic_tags"] == ["addition"]
    from_prompt = tag_row({"prompt": "Student: what is 10% of 50?\nMode: hint"})
    assert "percentages" in from_prompt["topic_tags"] and from_prompt["grade"] == "6"
    assert "statistics" not in from_prompt["topic_tags"]      # "Mode:" is not the statistics mode
