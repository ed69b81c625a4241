"""GSM8K (`openai/gsm8k`, configs `main` / `socratic`): {question, answer}; the answer's last line is `#### 72`.

The common record: `answers` holds the final number after `####` (commas and `$` removed), `solution` the whole
worked answer (the `math/cot` template trains on it). `strip_calculations: true` removes the `<<48/2=24>>`
calculator annotations from the solution.
"""

from __future__ import annotations

import re

from engine.data.adapters import content_id, need, record

DOMAIN = "math"
ARGS = {"strip_calculations": False}

_CALC = re.compile(r"<<[^<>]*>>")


def final_answer(solution: str) -> str | None:
    """The number after the last `####`, normalised: `1,000` -> `1000`, `$5` -> `5`."""
    if "####" not in solution:
        return None
    answer = solution.rsplit("####", 1)[1].strip()
    answer = answer.replace(",", "").replace("$", "").strip()
    return answer.rstrip(".") or None


def adapt(row: dict, *, index: int, args: dict) -> dict | None:
    question = need(row, "question")
    solution = need(row, "answer")
    answer = final_answer(solution)
    if args["strip_calculations"]:
        solution = _CALC.sub("", solution)
    return record(id=content_id("gsm8k", question, solution), question=question.strip(),
                  answers=[answer] if answer is not None else [], solution=solution.strip())
