"""The `compare` step: two evaluations side by side -> comparison.json (deltas, paired CIs, verdicts, flips)."""

from __future__ import annotations

from pathlib import Path

from engine.evaluate.compare import GateFailed, check_gates, compare
from engine.plan.context import StepContext
from engine.plan.steps.rows import write_metrics
from engine.recipe.errors import EngineError
from engine.runs.atomic import atomic_write_json


def _metrics(value, what: str, ctx: StepContext) -> dict:
    if isinstance(value, dict) and value.get("type") == "Metrics":
        return value
    if isinstance(value, str) and Path(value).is_dir():
        from engine.evaluate.runs import evaluation_metrics

        return evaluation_metrics(Path(value))
    raise EngineError(f"{ctx.step_id}.{what}: expected an evaluation's metrics or a run directory, got {str(value)[:120]}")


def run(ctx: StepContext) -> dict[str, dict]:
    baseline = _metrics(ctx.param("baseline"), "baseline", ctx)
    candidate = _metrics(ctx.param("candidate"), "candidate", ctx)
    comparison = compare(baseline, candidate, seed=ctx.seed)
    path = ctx.step_dir / (ctx.save_name or "comparison.json")
    artifact = write_metrics(path, comparison)
    for r in comparison["metrics"]:
        ctx.emit("compared", metric=r["metric"], baseline=r["baseline"], candidate=r["candidate"], verdict=r["verdict"])
    failures = check_gates(ctx.param("fail_if") or [], candidate.get("values") or {}, comparison)
    if failures:
        atomic_write_json(ctx.step_dir / "gates.json", {"failed": failures})
        raise GateFailed(f"{ctx.step_id}: gate failed: " + "; ".join(failures), outputs={"comparison": artifact},
                         failures=failures)
    return {"comparison": artifact}
