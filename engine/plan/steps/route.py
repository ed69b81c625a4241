"""The `route` step executor: a trained router's decisions on held-out rows, and how good they are.

`router: classifier` (the CoBench DeBERTa router): the sequence classifier scores P(label 1 = "this LLM answers
correctly") for every (question, candidate) pair, the same text pair it was trained on; each question goes to
the cheapest candidate it trusts (engine/evaluate/routing.py). `router: generative` (the LLM router): the model
writes its difficulty assessment for each row through `template`, and the class word in the reply routes it.

Outputs: `routes.jsonl` (or the step's `save:`; per question: the decision, P(correct) per candidate or the reply, the label of the
chosen pair), `metrics.json` (accuracy, f1, routed_share, routed_correct, oracle, always.<llm_id>).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.evaluate.routing import binary_scores, candidates_of, choose, class_of, route_metrics
from engine.plan.context import StepContext
from engine.recipe.errors import EngineError
from engine.runs.atomic import atomic_write_json, atomic_write_text, read_jsonl


def run(ctx: StepContext) -> dict[str, dict]:
    from engine.models.resolve import as_model_artifact

    data = ctx.param("data")
    if not isinstance(data, dict) or not data.get("path"):
        raise EngineError(f"{ctx.step_id}: `data` is not a dataset (got {data!r})")
    rows = read_jsonl(data["path"])
    if ctx.param("limit"):
        rows = rows[: int(ctx.param("limit"))]
    if not rows:
        raise EngineError(f"{ctx.step_id}: the held-out data {data['path']} has no rows")
    model = as_model_artifact(ctx.param("model"), ctx.recipe_dir)
    if ctx.param("router", "classifier") == "classifier":
        values, routes = _classifier(ctx, model, rows)
    else:
        values, routes = _generative(ctx, model, rows)
    values["router"] = {"type": ctx.param("router", "classifier"), "model": model.get("path"), "data": data["path"]}
    routes_path = ctx.step_dir / (ctx.save_name or "routes.jsonl")
    atomic_write_text(routes_path, "".join(json.dumps(route, ensure_ascii=False) + "\n" for route in routes))
    atomic_write_json(ctx.step_dir / "metrics.json", values)
    ctx.emit("routed", questions=values["questions"], routed_share=values["routed_share"])
    return {"metrics": {"type": "Metrics", "path": str(ctx.step_dir / "metrics.json"), "values": values},
            "rows": {"type": "Dataset", "path": str(routes_path), "rows": len(routes)}}


def _classifier(ctx: StepContext, model: dict, rows: list[dict]) -> tuple[dict, list[dict]]:
    question_field, candidate_field = ctx.param("question_field", "question"), ctx.param("candidate_field", "llm_id")
    label_field = ctx.param("label_field", "label")
    missing = [f for f in (question_field, candidate_field) if f not in rows[0]]
    if missing:
        raise EngineError(f"{ctx.step_id}: rows lack {', '.join(missing)} (fields: {', '.join(sorted(rows[0]))}); "
                          f"set `question_field:` / `candidate_field:`")
    candidates = candidates_of(rows, candidate_field, ctx.param("candidates"))
    first: dict[str, dict] = {}
    for row in rows:
        first.setdefault(str(row[question_field]), row)
    questions = list(first)
    pairs = [(q, llm) for q in questions for llm in candidates]
    texts = [{**first[q], candidate_field: llm} for q, llm in pairs]
    probs = classifier_probabilities(model, texts, list(ctx.param("text_fields") or [question_field, candidate_field]),
                                     max_length=int(ctx.param("max_length", 512)), batch_size=int(ctx.param("batch_size", 16)))
    p_correct = {pair: p for pair, p in zip(pairs, probs)}
    labels = {(str(r[question_field]), str(r[candidate_field])): _label(r[label_field], label_field, ctx.step_id)
              for r in rows if r.get(label_field) is not None}
    threshold = float(ctx.param("threshold", 0.5))
    decisions = {q: choose({llm: p_correct[(q, llm)] for llm in candidates}, candidates, threshold) for q in questions}
    labelled = [pair for pair in labels if pair in p_correct]
    values = binary_scores([int(p_correct[pair] >= threshold) for pair in labelled], [labels[pair] for pair in labelled])
    values["rows"] = len(labelled)
    values.update(route_metrics(questions, decisions, labels, candidates))
    routes = [{"question": q, "routed_to": decisions[q], "p_correct": {llm: round(p_correct[(q, llm)], 6) for llm in candidates},
               "label": labels.get((q, decisions[q]))} for q in questions]
    return values, routes


def _label(value: Any, field: str, step_id: str) -> int:
    if value in (0, 1, "0", "1", True, False):
        return int(value)
    raise EngineError(f"{step_id}: `{field}` is {value!r}; a router label is 1 (the LLM answers correctly) or 0 — "
                      f"set `label_field:` to the 0/1 field of the held-out rows")


def classifier_probabilities(model: dict, rows: list[dict], text_fields: list[str], *, max_length: int,
                             batch_size: int) -> list[float]:
    """P(label 1) for each row from a sequence classifier (full model or LoRA adapter), on the training text."""
    import torch

    from engine.methods.examples import classify_text
    from engine.methods.job import load_model, load_tokenizer

    kwargs: dict[str, Any] = {}
    if model.get("kind") == "adapter":
        from engine.plan.steps.merge import adapter_num_labels

        adapter = Path(model["path"])
        kwargs["num_labels"] = adapter_num_labels(adapter, json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")))
    classifier = load_model(model, "AutoModelForSequenceClassification", trainable=False, **kwargs).eval()
    tokenizer = load_tokenizer(model)
    texts = [classify_text(row, text_fields) for row in rows]
    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            first, second = [t[0] for t in chunk], [t[1] for t in chunk]
            enc = tokenizer(first, second if second[0] is not None else None, truncation=True, max_length=max_length,
                            padding=True, return_tensors="pt")
            logits = classifier(**enc).logits.float()
            out.extend(torch.softmax(logits, dim=-1)[:, 1].tolist())
    return out


def _generative(ctx: StepContext, model: dict, rows: list[dict]) -> tuple[dict, list[dict]]:
    from engine.plan.steps.collect import collect, load_step_template
    from engine.plan.steps.evaluate import generation_settings

    classes = dict(ctx.param("classes") or {})
    if not classes:
        raise EngineError(f"{ctx.step_id}: a generative router needs `classes:` (a word in its reply -> llm_id), "
                          f"e.g. `classes: {{easy: qwen2.5-7b, hard: gpt-4}}`")
    template = load_step_template(ctx.param("template"), ctx.recipe_dir)
    settings = generation_settings({"max_new_tokens": ctx.param("max_new_tokens", 32)}, ctx.seed)  # greedy, one reply
    out_path = ctx.step_dir / "generations.jsonl"
    collect(model, rows, template, settings, out_path, options={"generator": "auto", "batch_size": int(ctx.param("batch_size", 16))},
            recipe_dir=ctx.recipe_dir, resources=ctx.resources, emit=ctx.emit)
    replies = [(g.get("samples") or [None])[0] for g in read_jsonl(out_path)]
    reference_field = ctx.param("label_field", "label")
    question_field = ctx.param("question_field", "question")
    candidates = list(dict.fromkeys(classes.values()))
    routes, predicted, reference = [], [], []
    for row, text in zip(rows, replies):
        chosen, expected = class_of(text, classes), class_of(str(row.get(reference_field) or ""), classes)
        routes.append({"question": row.get(question_field), "reply": text, "class": chosen, "expected": expected,
                       "routed_to": classes.get(chosen, "none")})
        if expected is not None:
            predicted.append(chosen)
            reference.append(expected)
    decisions = {str(i): r["routed_to"] for i, r in enumerate(routes)}
    values = {"accuracy": sum(p == y for p, y in zip(predicted, reference)) / len(reference) if reference else None,
              "rows": len(reference), "parsed": sum(r["class"] is not None for r in routes) / len(routes)}
    values.update(route_metrics(list(decisions), decisions, {}, candidates))
    values.pop("routed_correct"), values.pop("routed_labelled")
    return values, routes
