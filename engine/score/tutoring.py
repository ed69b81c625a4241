"""tutoring: does a tutor's reply guide the student with a question (a Socratic step) without revealing the answer?

Definitions (docs/scorers.md, "Tutoring"), for a reply to a row with the student's message in `prompt` (or
`question`) and, optionally, the reference final answer in `answers[0]` (or a solution's `####` / `\\boxed`):
- asks_question: after removing fenced code and LaTeX math, the reply has a sentence ending in "?" that contains a
  word character.
- reveals_answer (only with a reference; else None): the reference answer R is revealed when
  (a) the reply states a final answer (it has `####`, `\\boxed{}` or "answer is/:/=") whose text contains R, or
  (b) R does not occur in the student's message and R occurs anywhere in the reply.
  "R occurs" means: for a numeric R, some number in the text equals R (tolerance 1e-6); otherwise the normalised R
  is a whole-word substring of the normalised text.
- socratic: asks_question and not reveals_answer. score = socratic (1 / 0).
Aggregated: the Socratic step rate is the mean of `socratic`; the answer-reveal rate is the mean of
`reveals_answer` over rows with a reference (no-reveal rate = 1 - it).
"""

from __future__ import annotations

import re
from typing import Mapping

from engine.score.scorer import per_sample, references, sample_result
from engine.score.text_match import (ANSWER_IS, boxed_contents, contains_words, final_answer, normalize_text,
                                     numbers_equal, numbers_in, reference_answer, whole_number)

_CODE = re.compile(r"```.*?(?:```|\Z)", re.S)
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$|\\\(.*?\\\)|\\\[.*?\\\]", re.S)
_QUESTION = re.compile(r"[^.!?？\n]*\w[^.!?？\n]*[?？]")


def asks_question(reply: str) -> bool:
    """True when the reply (without code and math) has a question sentence."""
    text = _MATH.sub(" ", _CODE.sub(" ", reply))
    return _QUESTION.search(text) is not None


def occurs(reference: str, text: str) -> bool:
    """The reference answer occurs in the text (numbers by value, words as whole words)."""
    number = whole_number(reference)
    if number is not None:
        return any(numbers_equal(value, number) for _, value in numbers_in(text))
    return contains_words(normalize_text(text), normalize_text(reference))


def states_final_answer(reply: str) -> bool:
    return "####" in reply or bool(boxed_contents(reply)) or ANSWER_IS.search(reply) is not None


def reveals_answer(reply: str, reference: str, student_message: str = "") -> bool:
    """True when the reply reveals the reference answer (definition in the module docstring)."""
    answer = reference_answer(reference).strip()
    if not answer:
        return False
    if states_final_answer(reply) and occurs(answer, final_answer(reply)):
        return True
    return not occurs(answer, student_message) and occurs(answer, reply)


class Tutoring:
    """Socratic step and answer reveal of tutoring replies (see the module docstring)."""

    name = "tutoring"

    def score(self, rows: list[dict], predictions: list[list[str | None]]) -> list[dict]:
        return per_sample(rows, predictions, self._one)

    def _one(self, row: Mapping, reply: str) -> dict:
        message = str(row.get("prompt") or row.get("question") or "")
        refs = references(row)
        if not refs and row.get("solution"):
            refs = [reference_answer(str(row["solution"]))]
        question = asks_question(reply)
        reveal = reveals_answer(reply, refs[0], message) if refs else None
        socratic = question and not reveal
        values = {"asks_question": question, "socratic": socratic}
        if reveal is not None:
            values.update(reveals_answer=reveal, no_reveal=not reveal)
        return sample_result(1.0 if socratic else 0.0, **values)
