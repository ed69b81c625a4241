"""The `evaluate` step: a model or endpoint on one dataset, a suite or tasks; per-row predictions and metrics.

Per task: rows (first `limit`) are rendered through the task's template and generated with the step's settings
(resumable, like `collect`), then scored by the scorers routed to each row, or — with `judgment:` — parsed as a
judgment with P(yes) from one forward pass over the label tokens. Outputs:

    predictions.jsonl (or `save:`)  one line per (task, row): the row, its predictions, scores and `item_values`
    metrics.json                    per task and scorer: every value with a bootstrap 95% CI clustered by item;
                                    `summary` (flat: `TASK.METRIC`, `TASK.SCORER.METRIC`, `accuracy`, ...) and `setup`
    RESULTS.json (`results_name`)   seed 001's shape: {"model", "datasets": [{"dataset", "metrics": {...}, "n"}]}
    comparison.json                 with `compare_to:`
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.evaluate.compare import GateFailed, check_gates, compare, metric_values
from engine.evaluate.metrics import bootstrap_ci, summarize_scores
from engine.models.resolve import as_model_artifact
from engine.plan.context import StepContext
from engine.plan.steps.collect import GENERATION_FIELDS, collect, load_step_template
from engine.plan.steps.rows import write_metrics, write_rows
from engine.recipe.errors import EngineError
from engine.runs.atomic import atomic_write_json, read_jsonl

TASK_FIELDS = ("template", "scorer", "limit", "k", *GENERATION_FIELDS, "generator", "batch_size", "workers")


def _task_name(ctx: StepContext) -> str:
    text = str(ctx.step.get("inputs", {}).get("data", ""))
    inner = text.strip()[2:-1].split("|")[0].strip() if text.strip().startswith("${") else ""
    return inner.split(".")[-1] if inner.startswith("data.") else "data"


def _tasks(ctx: StepContext) -> dict[str, dict]:
    """name -> task settings (a task's own values over the step's)."""
    step = {name: ctx.param(name) for name in TASK_FIELDS}
    if ctx.param("data") is not None:
        return {_task_name(ctx): {**step, "data": ctx.param("data")}}
    tasks = ctx.param("tasks") or {}
    if not tasks:
        raise EngineError(f"{ctx.step_id}: nothing to evaluate")
    out = {}
    for name, task in tasks.items():
        merged = dict(step)
        merged.update({k: v for k, v in task.items() if v is not None and k in (*TASK_FIELDS, "data")})
        out[name] = merged
    return out


def generation_settings(task: dict, seed: int) -> dict:
    return {"n": int(task.get("n") or 1), "temperature": float(task.get("temperature") or 0.0),
            "top_p": float(task.get("top_p") or 1.0), "max_new_tokens": int(task.get("max_new_tokens") or 256),
            "stop": list(task.get("stop") or []), "seed": seed if task.get("seed") is None else int(task["seed"]),
            "chat_template_kwargs": dict(task.get("chat_template_kwargs") or {})}


def run(ctx: StepContext) -> dict[str, dict]:
    model_value = ctx.param("model") or ctx.plan.get("model")
    if model_value is None:
        raise EngineError(f"{ctx.step_id}: no model or endpoint to evaluate")
    model = as_model_artifact(model_value, ctx.recipe_dir)
    judgment = ctx.param("judgment")
    n_boot = int(ctx.param("bootstrap") or 0)
    task_metrics: dict[str, dict] = {}
    summary: dict[str, Any] = {}
    prediction_rows: list[dict] = []
    templates: dict[str, str] = {}
    for name, task in _tasks(ctx).items():
        data = task["data"]
        if not isinstance(data, dict) or not data.get("path"):
            raise EngineError(f"{ctx.step_id}: task '{name}' has no dataset (got {data!r})")
        rows = read_jsonl(data["path"])
        rows = rows[: task["limit"]] if task.get("limit") else rows
        template = load_step_template(task["template"], ctx.recipe_dir) if task.get("template") else None
        if template is None:
            raise EngineError(f"{ctx.step_id}: task '{name}' needs a `template:` to prompt the model")
        templates[name] = template.name
        settings = generation_settings(task, ctx.seed)
        out_path = ctx.step_dir / "generations" / f"{name}.jsonl"
        options = {"generator": task.get("generator") or "auto", "batch_size": int(task.get("batch_size") or 16)}
        collect(model, rows, template, settings, out_path, options=options, workers=int(task.get("workers") or 1),
                recipe_dir=ctx.recipe_dir, resources=ctx.resources, input_fingerprint=data.get("fingerprint"), emit=ctx.emit)
        generated = read_jsonl(out_path)
        predictions = [g.get("samples") or [] for g in generated]
        if judgment:
            metrics, per_row = _judgment(ctx, model, template, rows, predictions, judgment, settings, n_boot)
        else:
            metrics, per_row = _scored(rows, predictions, task, n_boot, ctx.seed)
        task_metrics[name] = metrics
        for key, value in metrics.get("flat", {}).items():
            summary[f"{name}.{key}"] = value
        for row, preds, extra in zip(rows, predictions, per_row):
            prediction_rows.append({"task": name, **row, "predictions": preds, **extra})
    values = _values(task_metrics, summary, ctx, model, templates, judgment)
    items_path = ctx.step_dir / (ctx.save_name or "predictions.jsonl")
    items = write_rows(items_path, prediction_rows)
    metrics_artifact = write_metrics(ctx.step_dir / "metrics.json", values)
    metrics_artifact["items"] = items["path"]
    if ctx.param("results_name"):
        atomic_write_json(ctx.step_dir / ctx.param("results_name"), _results_json(values, task_metrics))
    comparison = _compare_to(ctx, metrics_artifact)
    failures = check_gates(ctx.param("fail_if") or [], values, comparison)
    if failures:
        atomic_write_json(ctx.step_dir / "gates.json", {"failed": failures})
        raise GateFailed(f"{ctx.step_id}: gate failed: " + "; ".join(failures),
                         outputs={"metrics": metrics_artifact, "rows": items}, failures=failures)
    return {"metrics": metrics_artifact, "rows": items}


def _scored(rows: list[dict], predictions: list[list], task: dict, n_boot: int, seed: int) -> tuple[dict, list[dict]]:
    from engine.score.scorer import choice_names, score_rows

    choice = task.get("scorer")
    if not choice:
        raise EngineError("a task without `judgment` needs a `scorer`")
    k = [1] if task.get("k") is None else list(task["k"])  # `k: []`: no pass@k
    results = score_rows(rows, predictions, choice, k=k)
    per_scorer = summarize_scores(rows, results, n_boot=n_boot, seed=seed)
    main = choice_names(choice)[0]
    flat: dict[str, Any] = {}
    for scorer, metrics in per_scorer.items():
        for metric, value in metrics.items():
            point = value.get("value") if isinstance(value, dict) else None  # counts (rows, failed) are not metrics
            if isinstance(point, (int, float)):
                flat[f"{scorer}.{metric}"] = point
                if scorer == main or metric not in flat:
                    flat[metric] = point
    per_row = []
    for result in results:
        main_result = result.get(main) or (next(iter(result.values())) if result else {})
        per_row.append({"scores": result, "correct": main_result.get("correct"), "item_values": metric_values(main_result)})
    return {"scorers": per_scorer, "rows": len(rows), "flat": flat}, per_row


def _judgment(ctx, model, template, rows, predictions, judgment: dict, settings: dict, n_boot: int):
    from engine.data.templates import render
    from engine.generate.engines import open_generator
    from engine.score.judgment import Judgment, judgment_metrics, p_yes_from_logprobs

    labels = list(judgment.get("labels") or ["yes", "no"])
    p_yes = None
    if judgment.get("probability", "logprobs") == "logprobs":
        generator = open_generator(model, generator=ctx.param("generator") or "auto", recipe_dir=ctx.recipe_dir,
                                   resources=ctx.resources)
        prompts = [render(template, row, with_target=False).messages for row in rows]
        candidates = sorted({v for label in labels for v in (label, label.capitalize(), " " + label, " " + label.capitalize())})
        probs = generator.logprobs_for(prompts, candidates, chat_template_kwargs=settings["chat_template_kwargs"] or None)
        p_yes = [p_yes_from_logprobs(p, labels) for p in probs]  # natural log-probs, variants pooled
    scorer = Judgment(labels=labels, truth_field=judgment.get("truth_field") or "judgment_label")
    results = scorer.score(rows, predictions, p_yes=p_yes)
    metrics = judgment_metrics(rows, results, labels)
    ci = bootstrap_ci([r.get("accuracy") for r in results], [r.get("id", i) for i, r in enumerate(rows)], n_boot=n_boot, seed=ctx.seed)
    auroc = metrics["auroc"]
    flat = {"judgment_accuracy": metrics["accuracy"], "accuracy": metrics["accuracy"],
            "auroc": auroc.get("value") if isinstance(auroc, dict) else auroc}  # metrics.auroc -> {"value": ...}
    per_row = [{"judgment": r.get("judgment"), "p_yes": r.get("p_yes"), "p_source": r.get("p_source"),
                "correct": r.get("correct"), "item_values": {"accuracy": r.get("accuracy")}} for r in results]
    return {"judgment": metrics, "accuracy_ci": ci, "rows": len(rows), "flat": flat}, per_row


def _values(task_metrics: dict, summary: dict, ctx, model: dict, templates: dict, judgment) -> dict:
    accuracies = [(m.get("flat", {}).get("accuracy"), m.get("rows", 0)) for m in task_metrics.values()]
    weighted = [(a, n) for a, n in accuracies if a is not None and n]
    overall = sum(a * n for a, n in weighted) / sum(n for _, n in weighted) if weighted else None
    values: dict[str, Any] = {
        "tasks": {name: {k: v for k, v in m.items() if k != "flat"} for name, m in task_metrics.items()},
        "summary": {**summary, "accuracy": overall},
        "accuracy": overall,
        "rows": sum(m.get("rows", 0) for m in task_metrics.values()),
        "setup": {"model": model.get("path") or model.get("url"), "name": (model.get("source") or {}).get("name"),
                  "generator": ctx.param("generator") or "auto",
                  "templates": templates, "suite": ctx.param("suite"), "temperature": ctx.param("temperature"),
                  "max_new_tokens": ctx.param("max_new_tokens"),
                  "chat_template": (model.get("source") or {}).get("chat_template")},
    }
    if len(task_metrics) == 1:  # one task: its flat values at the top too (judgment_accuracy, auroc, ...)
        only = next(iter(task_metrics.values()))
        values.update({k: v for k, v in only.get("flat", {}).items() if "." not in k})
        values["summary"].update({k: v for k, v in only.get("flat", {}).items() if "." not in k})
    if judgment and len(task_metrics) == 1:
        only = next(iter(task_metrics.values()))["judgment"]
        values["confusion"], values["ability_distribution"] = only["confusion"], only["ability_distribution"]
    return values


def _results_json(values: dict, task_metrics: dict) -> dict:
    """Seed 001's results file: `datasets[].metrics.accuracy` (EM/F1 for QA, pass@1 for code)."""
    datasets = []
    for name, m in task_metrics.items():
        flat = m.get("flat", {})
        # the main scorer's values (accuracy, EM/F1, pass@k, socratic, refusal, ...), then the other scorers' accuracy
        keep = {k: v for k, v in flat.items() if "." not in k}
        keep.update({k: v for k, v in flat.items() if k.count(".") == 1 and k.endswith(".accuracy") and k not in keep})
        datasets.append({"dataset": name, "metrics": keep, "n": m.get("rows", 0)})
    setup = values["setup"]
    return {"model": setup.get("name") or setup["model"], "path": setup["model"], "datasets": datasets,
            "overall": {"accuracy": values["accuracy"]}}


def _compare_to(ctx: StepContext, metrics_artifact: dict) -> dict | None:
    target = ctx.param("compare_to")
    if not target:
        return None
    if isinstance(target, str):
        from engine.evaluate.runs import evaluation_metrics

        baseline = evaluation_metrics(Path(target))
    else:
        baseline = target
    comparison = compare(baseline, metrics_artifact, n_boot=int(ctx.param("bootstrap") or 1000), seed=ctx.seed)
    atomic_write_json(ctx.step_dir / "comparison.json", comparison)
    return comparison
