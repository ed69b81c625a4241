"""TriviaQA (`mandarjoshi/trivia_qa`, e.g. `rc.nocontext`): {question, question_id, question_source,
answer: {value, aliases, normalized_aliases, normalized_value, ...}}. Closed book: no context.

`answers` is the answer value followed by its aliases (de-duplicated, order kept); `normalized_aliases` is kept for
scorers that match normalised text.
"""

from __future__ import annotations

from engine.data.adapters import need, record, unique

DOMAIN = "qa"
ARGS: dict = {}


def adapt(row: dict, *, index: int, args: dict) -> dict | None:
    answer = need(row, "answer")
    if isinstance(answer, str):  # flattened copies: {question, answer, aliases?}
        answer = {"value": answer, "aliases": row.get("aliases") or []}
    answers = unique([answer.get("value"), *(answer.get("aliases") or [])])
    return record(id=str(need(row, "question_id")), question=need(row, "question").strip(), answers=answers,
                  normalized_aliases=unique(answer.get("normalized_aliases") or []) or None)
