"""Finding evaluations inside run directories (for `compare_to: RUN_DIR` and `recipe compare A B`)."""

from __future__ import annotations

from pathlib import Path

from engine.recipe.errors import EngineError


def evaluations(run_dir: Path) -> dict[str, dict]:
    """step id -> the Metrics artifact of every completed evaluate step of a run, in run order."""
    from engine.runs.run_dir import RunDir

    run = RunDir.open(Path(run_dir))
    out: dict[str, dict] = {}
    for step_id, info in run.state.steps().items():
        metrics = (info.get("outputs") or {}).get("metrics") if info.get("status") == "done" else None
        if isinstance(metrics, dict) and metrics.get("items") and "tasks" in (metrics.get("values") or {}):
            out[step_id] = metrics
    return out


def evaluation_metrics(run_dir: Path, step: str | None = None) -> dict:
    """One evaluation of a run: the named step's, else the last one."""
    found = evaluations(run_dir)
    if not found:
        raise EngineError(f"{run_dir}: the run has no completed evaluation to compare with")
    if step is None:
        return list(found.values())[-1]
    if step not in found:
        raise EngineError(f"{run_dir}: no completed evaluation '{step}'; evaluations: {', '.join(found)}")
    return found[step]
