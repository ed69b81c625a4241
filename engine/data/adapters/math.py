"""MATH (`hendrycks/competition_math`, `EleutherAI/hendrycks_math`, MATH-500, ...): {problem, solution, level, type}.

`answers` holds the content of the solution's last `\\boxed{...}` (or `\\fbox{...}`), nested braces included;
rows with their own `answer` field (MATH-500) use it. `level` and `type` (or `subject`) are kept.
"""

from __future__ import annotations

from engine.data.adapters import content_id, need, record

DOMAIN = "math"
ARGS: dict = {}


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5` in `text`, or None."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    if i < len(text) and text[i] == " ":  # `\boxed 5`
        rest = text[i + 1:]
        return rest.split("$")[0].strip() or None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j].strip()
    return None  # unbalanced


def adapt(row: dict, *, index: int, args: dict) -> dict | None:
    problem = need(row, "problem")
    solution = need(row, "solution")
    answer = row.get("answer") or last_boxed(solution)
    row_id = row.get("unique_id") or content_id("math", problem)
    return record(id=row_id, question=problem.strip(), answers=[str(answer)] if answer else [],
                  solution=solution.strip(), level=row.get("level"), type=row.get("type") or row.get("subject"))
