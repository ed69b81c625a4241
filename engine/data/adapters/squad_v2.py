"""SQuAD 2.0 (`rajpurkar/squad_v2`): {id, title, context, question, answers: {text: [...], answer_start: [...]}}.

Answerable rows keep their (de-duplicated) answer texts; unanswerable rows (empty `answers.text`) get the answer
`unanswerable` (what the `qa/with_context` template asks the model to reply) and `answerable: false`.
`answerable_only: true` drops the unanswerable rows (the seed's "SQuAD 87.6K" train rows are the answerable ones).
"""

from __future__ import annotations

from engine.data.adapters import need, record, unique

DOMAIN = "qa"
ARGS = {"answerable_only": False, "unanswerable_answer": "unanswerable"}


def adapt(row: dict, *, index: int, args: dict) -> dict | None:
    answers = need(row, "answers") or {}
    texts = unique(answers.get("text") or []) if isinstance(answers, dict) else unique(answers)
    answerable = bool(texts)
    if not answerable and args["answerable_only"]:
        return None
    return record(id=str(need(row, "id")), question=need(row, "question").strip(), context=need(row, "context"),
                  answers=texts if answerable else [args["unanswerable_answer"]],
                  title=row.get("title"), answerable=answerable)
