"""`source: run`: a model produced by an earlier run, read from that run's `state.json`.

`output: model` is the run's declared `outputs.model` (followed through `${carry.X}` to the step that produces
it); `output: steps.NAME.model` is the last completed step named NAME (in a loop: the last epoch's).
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.models.local import local_path
from engine.recipe.errors import EngineError
from engine.runs.atomic import read_json

_STEP_REF = re.compile(r"^\$\{(?:steps|stages)\.([^.}]+)\.model\}$")


def resolve(source: dict, recipe_dir: Path) -> dict:
    run_dir = local_path(source["run"], recipe_dir)
    if not (run_dir / "state.json").is_file():
        raise EngineError(f"model source run: {run_dir} is not a run directory (no state.json); "
                          f"give a path like runs/<name>/<timestamp>-<hash>/")
    state = read_json(run_dir / "state.json")
    plan = read_json(run_dir / "plan.json") if (run_dir / "plan.json").is_file() else {}
    output = source.get("output") or "model"
    step_name = _producing_step(output, plan)
    found = None
    for step_id, entry in (state.get("steps") or {}).items():
        if entry.get("status") != "done":
            continue
        model = (entry.get("outputs") or {}).get("model")
        if isinstance(model, dict) and model.get("type") == "Model" and (step_name is None or step_id.split("/")[-1] == step_name):
            found = model  # state keeps insertion (execution) order: the last match is the newest
    if found is None:
        what = f"step '{step_name}'" if step_name else "any step"
        raise EngineError(f"run {run_dir} has no completed model output from {what} (output: {output}); "
                          f"check `recipe status {run_dir}`")
    if not Path(found["path"]).is_dir():
        raise EngineError(f"the model of run {run_dir} ({found['path']}) no longer exists")
    return found


def _producing_step(output: str, plan: dict) -> str | None:
    if output.startswith("steps."):
        parts = output.split(".")
        if len(parts) != 3 or parts[2] != "model":
            raise EngineError(f"model source run: output {output!r} must be `model` or `steps.NAME.model`")
        return parts[1]
    if output != "model":
        raise EngineError(f"model source run: output {output!r} must be `model` or `steps.NAME.model`")
    ref = (plan.get("outputs") or {}).get("model")
    carry = (plan.get("graph") or {}).get("carry") or {}
    for _ in range(4):
        if not isinstance(ref, str):
            return None
        m = _STEP_REF.match(ref)
        if m:
            return m.group(1)
        c = re.match(r"^\$\{carry\.([^.}]+)\}$", ref)
        ref = (carry.get(c.group(1)) or {}).get("next") if c else None
    return None
