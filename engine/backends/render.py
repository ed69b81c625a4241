"""Render every train step of a plan into its backend's arguments without running anything
(`recipe compile --render`, and the test that checks shipped recipes against the installed TRL)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator


def train_steps(graph: dict, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """(step id, plan entry) of every train step in a plan graph, through loops, pipelines and nested plans."""
    if not graph:
        return
    if graph.get("type") == "pipeline":
        for name, stage in graph["stages"].items():
            if stage["type"] == "step" and stage.get("use") == "train":
                yield prefix + name, stage
            elif stage["type"] == "inline":
                yield from train_steps(stage["graph"], f"{prefix}{name}/")
            elif stage["type"] == "recipe":
                yield from train_steps(stage["plan"]["graph"], f"{prefix}{name}/")
        return
    for name, step in (graph.get("steps") or {}).items():
        if step.get("use") == "train":
            yield prefix + name, step


def render_plan(plan: dict, out_dir: Path | str) -> dict[str, dict]:
    """{step id: {"backend", "config": fields}} for every train step; `out_dir/<step id>` stands in for step dirs.

    Raises RecipeErrors for `trainer_args:` / rendered fields the installed TRL does not have."""
    from engine.backends.trl import render_args

    out: dict[str, dict] = {}
    gpus = (plan.get("launch") or {}).get("gpus", 0)
    for step_id, step in train_steps(plan["graph"]):
        step_dir = Path(out_dir) / step_id
        backend = step["params"].get("backend", "trl")
        if backend == "axolotl":
            from engine.backends.axolotl import render_config

            config = render_config(step, step_dir, model_path="<model dir>", data_path=str(step_dir / "axolotl_train.jsonl"),
                                   gpus=gpus, seed=plan.get("seed", 0))
        else:
            config = render_args(step, step_dir, seed=plan.get("seed", 0), gpus=gpus, tracking=plan.get("tracking"),
                                 run_name=step_id.replace("/", "_"))
        out[step_id] = {"backend": backend, "config": config}
    return out
