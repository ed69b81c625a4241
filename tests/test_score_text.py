"""Known-answer tests for the text, number, math and QA scorers (definitions in docs/scorers.md)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from engine.score.qa import HotpotQA, SquadV2, TriviaQAAlias, normalize_answer, normalize_trivia
from engine.score.scorer import make_scorer
from engine.score.text_match import (GSM8K, ExactMatch, NumericMatch, PartialMatch, final_answer, final_number,
                                     numbers_in)


def one(scorer, row, prediction):
    """The single sample of a one-row, one-prediction call."""
    return scorer.score([row], [[prediction]])[0]["samples"][0]


# ------------------------------------------------------------------------------------------ GSM8K extraction


@pytest.mark.parametrize("text, expected", [
    ("She pays 3 * 6 = 18 dollars.\n#### 18", Fraction(18)),
    ("#### 1,234", Fraction(1234)),
    ("Total: 1,234,567 apples\n#### 1,234,567", Fraction(1234567)),
    ("The temperature drops to #### -5", Fraction(-5)),
    ("#### −7", Fraction(-7)),
    ("#### 3.50", Fraction(7, 2)),
    ("#### $18.00", Fraction(18)),
    ("#### 18 dollars", Fraction(18)),
    ("#### 50%", Fraction(50)),
    ("5 - 3 = 2 so 2 + 10 = 12", Fraction(12)),          # the last number, "-3" is not negative here
    ("The answer is 42. Let me double check: 6 * 7 = 42, 1 extra", Fraction(42)),
    ("So the result is \\boxed{\\frac{3}{4}} and 9 more", Fraction(3, 4)),
    ("It costs $1,000.50 in total", Fraction(2001, 2)),
    ("#### \n the number 7", Fraction(7)),              # nothing after ####: falls through to the last number
])
def test_final_number(text, expected):
    assert final_number(text)[1] == expected


def test_no_number():
    assert final_number("I do not know") is None
    assert numbers_in("x2 and v1.2.3") == []  # glued to words or other numbers


def test_final_answer():
    assert final_answer("blah\n#### 72\n") == "72"
    assert final_answer("so \\boxed{x^{2}} done") == "x^{2}"
    assert final_answer("The answer is: Paris.\nThanks") == "Paris."
    assert final_answer("thinking...\n\nParis\n") == "Paris"


def test_gsm8k_scorer():
    scorer = GSM8K()
    row = {"answers": ["1234"]}
    assert one(scorer, row, "... so #### 1,234") == {"score": 1.0, "correct": True, "extracted": "1,234",
                                                      "format_ok": True}
    assert one(scorer, row, "The total is 1234 apples.")["format_ok"] is False
    assert one(scorer, row, "The total is 1234 apples.")["correct"] is True
    assert one(scorer, {"answers": ["-3"]}, "#### -3")["correct"]
    assert one(scorer, {"answers": ["0.5"]}, "#### .5")["correct"]
    assert not one(scorer, row, "#### 1,235")["correct"]
    assert one(scorer, row, "no idea")["score"] == 0.0
    # reference from the solution when answers is empty; a row without a reference fails with a reason
    assert one(scorer, {"answers": [], "solution": "2+2=4\n#### 4"}, "#### 4")["correct"]
    failed = one(scorer, {"answers": []}, "#### 4")
    assert failed["score"] is None and "reference" in failed["reason"]


def test_exact_numeric_partial():
    row = {"answers": ["18"]}
    reply = "Janet sells 16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars.\n#### 18"
    assert one(ExactMatch(), row, reply)["correct"]
    assert one(NumericMatch(), row, reply)["correct"]
    assert one(PartialMatch(), row, reply)["correct"]
    # exact is textual: "1,234" is not "1234"; numeric and partial compare values
    assert not one(ExactMatch(), {"answers": ["1234"]}, "#### 1,234")["correct"]
    assert one(NumericMatch(), {"answers": ["1234"]}, "#### 1,234")["correct"]
    assert one(PartialMatch(), {"answers": ["1234"]}, "we get 1,234 in the end, then 5")["correct"]
    assert not one(NumericMatch(), {"answers": ["1234"]}, "we get 1,234 in the end, then 5")["correct"]
    # exact normalises case, markdown, surrounding punctuation and $
    assert one(ExactMatch(), {"answers": ["Paris"]}, "The answer is **paris**.")["correct"]
    assert one(ExactMatch(), {"answers": ["$18"]}, "#### 18")["correct"]
    assert not one(ExactMatch(extract=False), {"answers": ["18"]}, "#### 18")["correct"]
    # partial text match is by whole words
    assert one(PartialMatch(), {"answers": ["New York"]}, "It is in new york city.")["correct"]
    assert not one(PartialMatch(), {"answers": ["York"]}, "Yorkshire pudding")["correct"]
    assert not one(PartialMatch(), {"answers": ["5"]}, "about 15 or 25")["correct"]


# ------------------------------------------------------------------------------------------ math-verify


@pytest.mark.parametrize("reference, reply, expected", [
    ("\\frac{1}{2}", "So the answer is $\\boxed{0.5}$.", True),
    ("0.5", "$\\boxed{\\dfrac12}$", True),
    ("\\frac{1}{2}", "$\\boxed{\\frac{2}{4}}$", True),
    ("\\{1,2\\}", "$\\boxed{\\{2,1\\}}$", True),
    ("[0,1)", "$\\boxed{[0, 1)}$", True),
    ("(0,1)", "$\\boxed{[0,1]}$", False),
    ("x^2+2x+1", "$\\boxed{(x+1)^2}$", True),
    ("\\frac{\\sqrt{2}}{2}", "$\\boxed{\\frac{1}{\\sqrt{2}}}$", True),
    ("10\\%", "$\\boxed{0.1}$", True),
    ("3", "the result is 4", False),
    ("3", "first 1 then 2 and finally \\boxed{3}", True),
])
def test_math_verify_equivalences(reference, reply, expected):
    pytest.importorskip("math_verify")
    scorer = make_scorer("math_verify")
    assert one(scorer, {"answers": [reference]}, reply)["correct"] is expected


def test_math_verify_reference_from_solution_and_failures():
    pytest.importorskip("math_verify")
    scorer = make_scorer("math_verify")
    assert one(scorer, {"answers": [], "solution": "Thus $x = \\boxed{7}$."}, "\\boxed{7}")["correct"]
    assert one(scorer, {"answers": ["7"]}, "")["score"] == 0.0
    assert one(scorer, {"answers": []}, "\\boxed{7}")["score"] is None


def test_math_verify_in_a_thread():
    pytest.importorskip("math_verify")
    import threading

    out = {}
    thread = threading.Thread(target=lambda: out.update(r=one(make_scorer("math_verify"), {"answers": ["1/2"]}, "0.5")))
    thread.start()
    thread.join()
    assert out["r"]["correct"] is True


# ------------------------------------------------------------------------------------------ SQuAD 2.0


def test_squad_normalisation():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple a day") == "apple day"


@pytest.mark.parametrize("answers, prediction, em, f1", [
    (["Denver Broncos"], "Denver Broncos", 1.0, 1.0),
    (["Denver Broncos"], "the Denver Broncos.", 1.0, 1.0),             # articles and punctuation
    (["Denver Broncos"], "Broncos", 0.0, 2 / 3),                        # P = 1, R = 1/2
    (["Denver Broncos", "Broncos"], "Broncos", 1.0, 1.0),               # max over gold answers
    (["in the 10th century"], "10th century France", 0.0, 2 * (2 / 3) * (2 / 3) / (4 / 3)),
    (["Denver Broncos"], "Carolina Panthers", 0.0, 0.0),
    (["unanswerable"], "unanswerable", 1.0, 1.0),                      # no-answer on both sides
    (["unanswerable"], "", 1.0, 1.0),
    (["unanswerable"], "No answer.", 1.0, 1.0),
    (["unanswerable"], "Denver", 0.0, 0.0),
    ([], "Unanswerable", 1.0, 1.0),
    (["Denver Broncos"], "unanswerable", 0.0, 0.0),
])
def test_squad_v2_official_cases(answers, prediction, em, f1):
    sample = one(SquadV2(), {"answers": answers}, prediction)
    assert sample["em"] == em
    assert sample["f1"] == pytest.approx(f1)
    assert sample["score"] == pytest.approx(f1) and sample["correct"] is (em == 1.0)


def test_squad_answerable_flag_wins():
    assert one(SquadV2(), {"answers": ["unanswerable"], "answerable": False}, "unanswerable")["em"] == 1.0
    assert one(SquadV2(), {"answers": ["x"], "answerable": False}, "")["has_answer"] is False


# ------------------------------------------------------------------------------------------ HotpotQA


def test_hotpotqa():
    scorer = HotpotQA()
    assert one(scorer, {"answers": ["yes"]}, "Yes")["em"] == 1.0
    assert one(scorer, {"answers": ["yes"]}, "yes it is")["f1"] == 0.0      # yes/no must match exactly
    assert one(scorer, {"answers": ["no"]}, "yes")["f1"] == 0.0
    sample = one(scorer, {"answers": ["Arthur's Magazine"]}, "Arthur's Magazine was first")
    assert sample["em"] == 0.0 and sample["precision"] == pytest.approx(0.5) and sample["recall"] == 1.0
    assert sample["f1"] == pytest.approx(2 / 3)
    assert one(scorer, {"answers": []}, "x")["score"] is None


# ------------------------------------------------------------------------------------------ TriviaQA


def test_triviaqa_normalisation():
    assert normalize_trivia("The_Beatles’") == "beatles"
    assert normalize_trivia("U.S.A.") == "u s"


def test_triviaqa_aliases():
    row = {"answers": ["Paris", "City of Light", "Paris, France"]}
    scorer = TriviaQAAlias()
    assert one(scorer, row, "paris")["em"] == 1.0
    sample = one(scorer, row, "It is Paris.")
    assert sample["contains"] == 1.0 and sample["em"] == 0.0 and sample["correct"]
    assert one(scorer, row, "the City of Light")["em"] == 1.0           # article dropped
    assert not one(scorer, row, "Parisian cafe")["correct"]             # whole tokens only
    assert not one(TriviaQAAlias(match="exact"), row, "It is Paris.")["correct"]
    assert one(scorer, {"answers": ["1"]}, "the 1960s")["contains"] == 0.0
    assert one(scorer, {"answers": ["x"], "normalized_aliases": ["lutetia"]}, "Lutetia!")["em"] == 1.0
    with pytest.raises(Exception, match="match"):
        make_scorer("triviaqa_alias", match="fuzzy")
