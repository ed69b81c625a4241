"""Commands that read finished runs: report, compare."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from engine.cli.main import cli, handle_errors
from engine.cli.output import dump_json, echo, table


def print_comparison(comparison: dict, title: str = "comparison") -> None:
    """The comparison table (rich on a terminal, tab-separated when piped), then verdict lists, flips, warnings."""
    from engine.runs.report_metrics import comparison_notes, comparison_rows

    rows = comparison_rows(comparison, brief=True)
    table(title, ["metric", "baseline", "candidate", "delta", "95% CI (paired)", "verdict"], rows)
    hidden = len(comparison.get("metrics") or []) - len(rows)
    if hidden:
        echo(f"({hidden} scorer-qualified or overall rows repeating these are in the comparison JSON)")
    for line in comparison_notes(comparison):
        echo(line)


def final_comparison(run_path: Path) -> Optional[dict]:
    """The comparison of a run whose plan ends in a `compare` step (quickstart), None otherwise."""
    from engine.runs.run_dir import RunDir

    run = RunDir.open(run_path)
    graph = run.plan().get("graph") or {}
    entries = graph.get("stages") if graph.get("type") == "pipeline" else graph.get("steps")
    order = graph.get("order") or list(entries or {})
    if graph.get("type") not in ("pipeline", "steps") or not order:
        return None
    last = (entries or {}).get(order[-1]) or {}
    if last.get("use") != "compare" or not run.state.is_done(order[-1]):
        return None
    artifact = run.state.outputs(order[-1]).get("comparison") or {}
    return artifact.get("values") if isinstance(artifact.get("values"), dict) else None


def print_run_end(run_path: Path) -> None:
    """What `recipe run` / `recipe resume` print last: the final comparison (if the plan ends in one), the report."""
    try:
        comparison = final_comparison(run_path)
    except Exception:  # noqa: BLE001  (a run dir too broken to read has no comparison to show)
        comparison = None
    if comparison:
        print_comparison(comparison)
    report = run_path / "report.html"
    if report.is_file():
        echo(f"report: {report}")
        echo(f"        {run_path / 'report.md'}")


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@handle_errors
def report(run_dir: str) -> None:
    """Write a run's report again: report.md and a self-contained report.html.

    Both go into RUN_DIR (plots embedded in the HTML, and as PNGs in RUN_DIR/report/ for the Markdown). Every run
    writes them when it ends; this rewrites them, e.g. after a crash or an engine upgrade.
    """
    from engine.runs.report import write_report

    paths = write_report(Path(run_dir))
    echo(f"report: {paths['html']}")
    echo(f"        {paths['md']}")


@cli.command()
@click.argument("run_a", type=click.Path(exists=True, file_okay=False))
@click.argument("run_b", type=click.Path(exists=True, file_okay=False))
@click.option("--step", metavar="NAME", help="The evaluation step to compare in both runs (default: each run's last).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="comparison.json", show_default=True,
              help="Where to write the comparison JSON.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", help="Print a table or the JSON.")
@click.option("--fail-on-regression", is_flag=True, help="Exit 1 when a metric regressed (for CI gates).")
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples of the paired CIs.")
@handle_errors
def compare(run_a: str, run_b: str, step: Optional[str], output: str, fmt: str, fail_on_regression: bool,
            bootstrap: int) -> None:
    """Compare the evaluation of RUN_B (candidate) with that of RUN_A (baseline).

    Per metric: delta, paired 95% CI on shared items, and improvement / regression / within noise; the items
    that flipped right <-> wrong; a warning when the evaluations differ in generator, template, suite...
    """
    from engine.evaluate.compare import compare as compare_metrics
    from engine.runs.atomic import atomic_write_json

    step_a, baseline = _evaluation(Path(run_a), step)
    step_b, candidate = _evaluation(Path(run_b), step)
    comparison = compare_metrics(baseline, candidate, n_boot=bootstrap)
    comparison["runs"] = {"baseline": {"run_dir": str(Path(run_a).resolve()), "step": step_a},
                          "candidate": {"run_dir": str(Path(run_b).resolve()), "step": step_b}}
    atomic_write_json(Path(output), comparison)
    if fmt == "json":
        dump_json(comparison)
    else:
        print_comparison(comparison, title=f"{Path(run_a).name}:{step_a} -> {Path(run_b).name}:{step_b}")
        echo(f"comparison: {Path(output)}")
    if fail_on_regression and comparison["regressions"]:
        sys.exit(1)


def _evaluation(run_dir: Path, step: Optional[str]) -> tuple[str, dict]:
    """(step id, Metrics artifact) of the named evaluation of a run, else of its last one."""
    from engine.evaluate.runs import evaluations
    from engine.recipe.errors import EngineError, choose_from

    found = {k: v for k, v in evaluations(run_dir).items() if not k.endswith(":stage")}  # stage records repeat steps
    if not found:
        raise EngineError(f"{run_dir}: the run has no completed evaluation to compare")
    if step is None:
        return list(found.items())[-1]
    if step not in found:
        raise EngineError(f"{run_dir}: no completed evaluation '{step}'; {choose_from(step, list(found))}")
    return step, found[step]
