"""The `score` step: score every row's samples with the scorers routed to it (by source/domain)."""

from __future__ import annotations

from engine.plan.context import StepContext
from engine.plan.steps.rows import output_path, read_rows, write_metrics, write_rows
from engine.score.scorer import score_rows


def scored(rows: list[dict], choice, options: dict | None = None) -> list[dict[str, dict]]:
    """Per row: scorer name -> row result (samples' verdicts, accuracy, named values)."""
    return score_rows(rows, [row.get("samples") or [] for row in rows], choice, options=options or None)


def run(ctx: StepContext) -> dict[str, dict]:
    rows = read_rows(ctx.param("samples"), f"{ctx.step_id}.samples")
    results = scored(rows, ctx.param("scorer"), ctx.param("args"))
    out, totals = [], {}
    for row, by_scorer in zip(rows, results):
        out.append({**row, "scores": by_scorer})
        for name, result in by_scorer.items():
            if result.get("accuracy") is not None:
                totals.setdefault(name, []).append(result["accuracy"])
    values = {name: {"accuracy": sum(v) / len(v), "rows": len(v)} for name, v in totals.items()}
    return {"samples": write_rows(output_path(ctx, "scored.jsonl"), out, "Samples"),
            "metrics": write_metrics(ctx.step_dir / "metrics.json", values)}
