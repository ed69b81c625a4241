"""CoBench router rows: {question, llm_id, label} (the DeBERTa router's training data; label 0/1).

The classifier's input is `text` (and `text_pair`): with `input: question` (default) the question alone, with
`input: pair` the pair (question, llm_id), so one router scores every candidate LLM.
"""

from __future__ import annotations

from engine.data.adapters import content_id, need, record

DOMAIN = "router"
ARGS = {"input": "question"}


def adapt(row: dict, *, index: int, args: dict) -> dict | None:
    if args["input"] not in ("question", "pair"):
        raise ValueError(f"adapter_args.input must be 'question' or 'pair', got {args['input']!r}")
    question = need(row, "question")
    llm_id = need(row, "llm_id")
    label = need(row, "label")
    return record(id=str(row.get("id") or content_id("router", question, llm_id)), question=question, label=label,
                  llm_id=str(llm_id), text=question, text_pair=str(llm_id) if args["input"] == "pair" else None)
