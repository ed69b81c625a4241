"""math_verify: mathematical equivalence of the reply's answer and the reference, decided by `math-verify`.

Definition (docs/scorers.md): the reference is `answers[0]` (MATH: the boxed answer; parsed as `\\boxed{ref}`
unless it already contains `\\boxed`), else the last `\\boxed{}` of `solution`. The reply is parsed by
math-verify's default extraction (LaTeX with the last `\\boxed{}` first, then plain expressions). Correct when
`math_verify.verify(gold, answer)` holds (numbers, fractions vs decimals, sets, intervals, symbolic expressions;
floats rounded to 6 digits). A reply with nothing parseable scores 0; a reference that does not parse fails.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Mapping

from engine.score.scorer import failed_sample, per_sample, references, sample_result
from engine.score.text_match import boxed_contents


def _timeouts() -> dict[str, Any]:
    """math-verify's own timeouts use SIGALRM, which only works in the main thread: off elsewhere."""
    if threading.current_thread() is threading.main_thread():
        return {}
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return {"parsing_timeout": None}


def _parse(text: str) -> list:
    from math_verify import parse

    return parse(text, **_timeouts())


def parse_reference(reference: str) -> list:
    """The parsed reference answer (empty when math-verify cannot parse it)."""
    text = reference.strip()
    if "\\boxed" not in text:
        text = f"\\boxed{{{text}}}"
    parsed = _parse(text)
    return parsed or _parse(reference)


def _verify(gold: list, answer: list) -> bool:
    from math_verify import verify

    kwargs = {} if threading.current_thread() is threading.main_thread() else {"timeout_seconds": None}
    return bool(verify(gold, answer, **kwargs))


def equivalent(reference: str, reply: str) -> bool:
    """True when the reply's answer is mathematically equivalent to the reference answer."""
    gold, answer = parse_reference(reference), _parse(reply)
    return bool(gold and answer) and _verify(gold, answer)


class MathVerify:
    """Mathematical equivalence via math-verify (see the module docstring)."""

    name = "math_verify"

    def score(self, rows: list[dict], predictions: list[list[str | None]]) -> list[dict]:
        return per_sample(rows, predictions, self._one)

    def _one(self, row: Mapping, prediction: str) -> dict:
        refs = references(row)
        reference = refs[0] if refs else None
        if reference is None and row.get("solution"):
            boxed = boxed_contents(str(row["solution"]))
            reference = boxed[-1] if boxed else None
        if reference is None:
            return failed_sample("row has no reference answer (answers or a boxed solution)")
        try:
            gold = parse_reference(reference)
            if not gold:
                return failed_sample(f"math-verify cannot parse the reference {reference!r}")
            answer = _parse(prediction)
            if not answer:
                return sample_result(0.0, extracted=None)
            ok = _verify(gold, answer)
        except Exception as err:  # noqa: BLE001 - math-verify raising on odd input is one failed sample
            return failed_sample(f"math-verify failed: {type(err).__name__}: {err}")
        return sample_result(1.0 if ok else 0.0, extracted=str(answer[-1]) if answer else None)
