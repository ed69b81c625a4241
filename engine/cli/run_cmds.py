"""Commands that execute: run, resume, runs."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.main import cli, handle_errors, load, recipe_options
from engine.cli.output import echo, success, table
from engine.cli.report_cmds import print_run_end


def _run_name(r, plan: dict) -> str | None:
    """The seed-style directory name from `output.run_name`, e.g. qwen2.5_7b_triviaqa_binary_lr4e-06_20250121_123456."""
    template = r.output.run_name
    if not template:
        return None
    from datetime import datetime

    from engine.recipe.expressions import render_string

    model = r.model
    model_name = (getattr(model, "name", None) or getattr(model, "path", None) or getattr(model, "source", "model")) if model else "model"
    model_name = str(model_name).rstrip("/").rsplit("/", 1)[-1].lower()
    text = render_string(template, {"name": plan["name"], "model": model_name, "vars": r.vars,
                                    "timestamp": datetime.now().strftime("%Y%m%d_%H%M%S")})
    return text.replace("/", "_").replace(" ", "_")


def _input_fingerprints(v) -> dict:
    """Fingerprints of the data sources (files by content, hub datasets by path/config/split/revision)."""
    if v.recipe.data is None:
        return {}
    from engine.data.build import data_fingerprints

    return {f"data.{name}": fp for name, fp in data_fingerprints(v).items()}


def _side_envs(plan: dict) -> dict:
    """Versions of the side environments this plan uses (recorded in the lock)."""
    from engine.plan.execute import iter_plan_steps
    from engine.recipe.errors import EngineError

    backends = {(step.get("params") or {}).get("backend") for _, step in iter_plan_steps(plan["graph"])}
    out: dict = {}
    if "axolotl" in backends:
        from engine.envs import axolotl

        try:
            out["axolotl"] = axolotl.versions()
        except EngineError as exc:
            out["axolotl"] = {"error": str(exc)}
    return out


@cli.command()
@recipe_options
@click.option("--root", type=click.Path(file_okay=False), help="Runs root (default: the recipe's output.root, $RECIPE_ENGINE_RUNS or ./runs).")
@click.option("--no-cache", is_flag=True, help="Recompute every step, even when an identical one completed before.")
@click.option("--only", multiple=True, metavar="STAGE", help="Run only these pipeline stages (repeatable).")
@click.option("--from", "from_", metavar="STAGE", help="Start the pipeline at this stage.")
@click.option("--skip", multiple=True, metavar="STAGE", help="Skip these pipeline stages (repeatable).")
@click.option("--reuse", type=click.Path(exists=True, file_okay=False), help="Take the outputs of stages not run (and of loop epochs before loop.start_epoch) from this run directory.")
@handle_errors
def run(recipe: str, profiles: tuple, sets: tuple, unsets: tuple, root: str | None, no_cache: bool,
        only: tuple, from_: str | None, skip: tuple, reuse: str | None) -> None:
    """Validate, compile and run a recipe in a new run directory."""
    from engine.paths import runs_root
    from engine.plan.compile import compile_recipe
    from engine.plan.execute import Executor
    from engine.plan.selection import StageSelection
    from engine.recipe.yaml_io import dump_yaml
    from engine.recipe.validate import validate as run_validate
    from engine.runs.lock import build_lock
    from engine.runs.run_dir import RunDir

    loaded = load(recipe, profiles, sets, unsets)
    v = run_validate(loaded)
    plan = compile_recipe(v)
    r = v.recipe
    selection = StageSelection(only=only, from_=from_, skip=skip, reuse=Path(reuse) if reuse else None)
    selection.check(plan)  # before the run directory exists: a bad selection leaves nothing behind
    runs = Path(root or r.output.root or runs_root())
    run_dir = RunDir.create(root=runs, name=plan["name"], recipe_hash=plan["recipe_hash"], recipe_text=loaded.text,
                            recipe_filename=str(loaded.path), resolved_yaml=dump_yaml(loaded.tree), plan=plan,
                            recipe_dir=loaded.path.parent, dir_name=_run_name(r, plan))
    run_dir.write_lock(build_lock(recipe_files=loaded.files, inputs=_input_fingerprints(v), seeds={"run": plan["seed"]},
                                  side_envs=_side_envs(plan)))
    echo(f"run directory: {run_dir.path}")
    try:
        Executor(run_dir, plan, loaded.path.parent, use_cache=not no_cache, selection=selection).execute()
    finally:
        print_run_end(run_dir.path)
    success(f"run finished: {run_dir.path}")


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@handle_errors
def resume(run_dir: str) -> None:
    """Continue a run that stopped (crash, kill, failure) at its first unfinished step."""
    from engine.plan.execute import Executor
    from engine.runs.run_dir import RunDir

    run = RunDir.open(Path(run_dir))
    recipe_dir = Path(run.info.get("recipe_dir") or run.path)
    done = [s for s, info in run.state.steps().items() if info.get("status") == "done"]
    echo(f"resuming {run.path} ({len(done)} step{'s' if len(done) != 1 else ''} already done)")
    try:
        Executor(run, run.plan(), recipe_dir).execute()
    finally:
        print_run_end(run.path)
    success(f"run finished: {run.path}")


@cli.command()
@click.option("--root", type=click.Path(file_okay=False), help="Runs root (default $RECIPE_ENGINE_RUNS or ./runs).")
@handle_errors
def runs(root: str | None) -> None:
    """List runs, newest first, with their status and key metrics."""
    from engine.paths import runs_root
    from engine.runs.report_metrics import key_metrics
    from engine.runs.run_dir import list_runs

    rows = []
    for r in list_runs(Path(root) if root else runs_root()):
        shown = ", ".join(f"{k}={v:.4g}" for k, v in key_metrics(r.get("metrics") or {}).items())
        rows.append((r["name"], r["created"], r["status"], shown, r["path"]))
    table("runs", ["name", "created", "status", "metrics", "path"], rows)
