"""The `record` step: an experiment record (README.md) — date, base model, data, method, hyperparameters,
results — with a findings section for the user to fill (seed 002's experiment tracking)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from engine.plan.context import StepContext
from engine.runs.atomic import atomic_write_text


def _train_steps(graph: dict) -> list[dict]:
    from engine.plan.execute import iter_plan_steps

    return [step for _, step in iter_plan_steps(graph) if step["use"] == "train"]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def run(ctx: StepContext) -> dict[str, dict]:
    plan = ctx.plan
    model = plan.get("model") or {}
    lines = [f"# {ctx.param('title')}", "",
             f"**Date:** {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
             f"**Base model:** {model.get('name') or model.get('path') or model.get('file') or model.get('url') or model.get('source')}",
             f"**Recipe:** {plan['name']} (hash {plan['recipe_hash']})", ""]
    sources = (plan.get("data") or {}).get("sources") or {}
    if sources:
        lines.append("**Data:**")
        lines += [f"- {name}: {s.get('source')} {s.get('path') or s.get('file') or ''} (adapter {s.get('adapter')})".rstrip()
                  for name, s in sources.items()]
        lines.append("")
    training = _training_sources(plan["graph"])
    if training:
        lines.append("**Training data:**")
        lines += [f"- {name}: {s.get('source')} {s.get('path') or s.get('file') or ''} (adapter {s.get('adapter')})".rstrip()
                  for name, s in training.items()]
        lines.append("")
    for step in _train_steps(plan["graph"]):
        p = step["params"]
        batch = (step.get("launch") or {}).get("batch") or {}
        lines += [f"**Method:** {p['method']} ({p['adapter']['type']}, backend {p['backend']})", "**Hyperparameters:**",
                  f"- Epochs: {p['epochs']}" + (f" (max steps {p['max_steps']})" if p.get("max_steps") else ""),
                  f"- Batch size: {p['batch_size']} per device, {batch.get('global', '?')} global",
                  f"- Learning rate: {p['learning_rate']}", ""]
    lines.append("**Results:**")
    for section, metrics in (ctx.param("results") or {}).items():
        values = (metrics or {}).get("values", {}) if isinstance(metrics, dict) else {}
        lines += _result_lines(section, values)
    lines += ["", "**Key Findings:**", "", ctx.param("notes") or "- (write what you learned here)", ""]
    path = ctx.step_dir / (ctx.save_name or "README.md")
    atomic_write_text(path, "\n".join(lines))
    return {"record": {"type": "Value", "value": str(path), "path": str(path)}}


def _training_sources(graph: dict) -> dict:
    """The data sources of the recipe files that pipeline stages train with (e.g. tutoring/sft's training data)."""
    out: dict = {}
    for stage in (graph.get("stages") or {}).values() if graph.get("type") == "pipeline" else ():
        if stage.get("type") == "recipe" and _train_steps(stage["plan"]["graph"]):
            out.update(((stage["plan"].get("data") or {}).get("sources") or {}))
    return out


def _result_lines(section: str, values: dict) -> list[str]:
    """One line per task of an evaluation (`TASK: metric value, ...`: the main scorer's values), else the numbers."""
    summary = values.get("summary") or {k: v for k, v in values.items() if isinstance(v, (int, float))}
    tasks: dict[str, list[str]] = {}
    for key, value in summary.items():
        task, _, metric = key.partition(".")
        if metric and "." not in metric and metric != "score" and isinstance(value, (int, float)):
            tasks.setdefault(task, []).append(f"{metric} {_fmt(value)}")
    if not tasks:
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in summary.items() if isinstance(v, (int, float)))
        return [f"- {section}: {shown or 'no numeric metrics'}"]
    overall = summary.get("accuracy")
    head = f"- {section}:" + (f" accuracy {_fmt(overall)} over all rows" if isinstance(overall, (int, float)) else "")
    return [head] + [f"  - {task}: {', '.join(items)}" for task, items in tasks.items()]
