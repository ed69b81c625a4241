"""Compile a validated recipe into a plan: the step graph in the engine's own terms.

The plan is plain JSON: resolved hyperparameters (defaults filled in), the order of steps (topological,
stable by declaration), each step's reference inputs and declared outputs, batch arithmetic and the launch
topology of every train step. It is a pure function of the recipe: no torch, no clock, no environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from engine.backends.deepspeed import deepspeed_config, resolve_precision
from engine.backends.launch import launch_command
from engine.data.fingerprints import short_hash
from engine.plan.batch import plan_batch
from engine.recipe import references as refs
from engine.recipe.checks import iter_blocks, iter_strings, resolve_local
from engine.recipe.errors import ErrorCollector, RecipeErrors
from engine.recipe.expressions import evaluate_bool, expression_names
from engine.recipe.models.recipe import (EvalRecipe, InlineEval, InlineLoop, InlineTrain, LoopRecipe, PipelineRecipe,
                                         RecipeStage, TrainRecipe)
from engine.recipe.models.train import _TrainCommon
from engine.recipe.validate import ValidatedRecipe

PLAN_VERSION = 1
_PATH_KEYS = {  # block class -> keys holding local paths
    "FileSource": ("path",), "DiskSource": ("path",), "LocalModel": ("path", "tokenizer"), "GGUFModel": ("file",),
    "TinyModel": ("corpus",), "DeepSpeedConfig": ("config",), "Launch": ("hostfile",), "RunModel": ("run",),
}
TRAIN_PROGRAM = ["-m", "engine.backends.train_entry", "{step_dir}"]


def recipe_hash(tree: dict) -> str:
    """The hash of a resolved recipe tree (what run directories and the cache are keyed by)."""
    return short_hash(tree)


def compile_recipe(v: ValidatedRecipe, root_dir: Optional[Path] = None) -> dict:
    """The plan of a validated recipe; raises RecipeErrors for problems only compile can see (batch arithmetic).

    Local paths in the plan are relative to `root_dir` (default: the recipe file's directory), whichever file
    (include, profile) wrote them, so a plan never holds machine-specific absolute paths.
    """
    errors = ErrorCollector()
    plan = _Compiler(v, errors, root_dir or v.loaded.path.resolve().parent).plan()
    errors.raise_if_any()
    return plan


def _relative(text: str, location, root: Path) -> str:
    if text.startswith("package:") or "${" in text:
        return text
    target = resolve_local(text, location)
    return os.path.relpath(target, root) if not Path(text).is_absolute() else text


class _Compiler:
    def __init__(self, v: ValidatedRecipe, errors: ErrorCollector, root: Path):
        self.v, self.errors, self.root = v, errors, root
        self.locate = v.loaded.location
        self.recipe = self._with_relative_paths(v.recipe)

    def _with_relative_paths(self, recipe):
        r = recipe.model_copy(deep=True)
        for path, block in iter_blocks(r):
            for key in _PATH_KEYS.get(type(block).__name__, ()):
                value = getattr(block, key, None)
                if isinstance(value, str):
                    setattr(block, key, _relative(value, self.locate(path + (key,)), self.root))
        return r

    def plan(self) -> dict:
        r = self.recipe
        out: dict[str, Any] = {
            "plan": PLAN_VERSION,
            "name": r.name or self.v.loaded.path.stem,
            "kind": r.kind,
            "recipe_hash": recipe_hash(self.v.loaded.tree),
            "seed": r.seed,
            "vars": r.vars,
            "model": _dump(r.model),
            "data": self._data(r),
            "launch": _dump(r.launch),
            "tracking": _dump(r.tracking),
            "output": _dump(r.output),
            "suites": {k: _dump(s) for k, s in r.suites.items()},
            "trust": self.v.trust,
        }
        out["graph"] = self._graph(r, (), r)
        out["outputs"] = dict(r.outputs)
        return out

    def _data(self, r) -> Optional[dict]:
        if r.data is None:
            return None
        d = _dump(r.data)
        d["outputs"] = r.data.output_names()
        return d

    def _graph(self, r, prefix: tuple, top) -> dict:
        if isinstance(r, (TrainRecipe, InlineTrain)):
            return {"type": "steps", "order": ["train"], "steps": {"train": self._step("train", r.train, prefix + ("train",), r)}}
        if isinstance(r, (EvalRecipe, InlineEval)):
            return {"type": "steps", "order": ["evaluate"],
                    "steps": {"evaluate": self._step("evaluate", r.evaluate, prefix + ("evaluate",), r)}}
        if isinstance(r, (LoopRecipe, InlineLoop)):
            loop = r.loop
            steps = {n: self._step(n, s, prefix + ("loop", "steps", n), r) for n, s in loop.steps.items()}
            order, _ = refs.order_steps({n: set(s["needs"]) for n, s in steps.items()})
            return {
                "type": "loop",
                "epochs": loop.epochs,
                "start_epoch": loop.start_epoch,
                "baseline_skip": loop.baseline.skip if loop.baseline else None,
                "carry": {k: _dump(c) for k, c in loop.carry.items()},
                "order": order,
                "steps": steps,
                "summary": _dump(loop.summary),
                "stop": _dump(loop.stop),
            }
        if isinstance(r, PipelineRecipe):
            stages = {}
            for name, stage in r.stages.items():
                path = ("stages", name)
                if isinstance(stage, RecipeStage):
                    sub = self.v.stage_recipes[name]
                    stages[name] = {"type": "recipe", "recipe": stage.recipe, "set": stage.set, "profile": stage.profile,
                                    "when": self._when(stage.when, r, path), "plan": compile_recipe(sub, self.root)}
                elif isinstance(stage, (InlineTrain, InlineEval, InlineLoop)):
                    stages[name] = {"type": "inline", "kind": stage.kind, "when": self._when(stage.when, r, path),
                                    "model": _dump(stage.model), "outputs": dict(stage.outputs),
                                    "overrides": self._inline_overrides(stage, r), "graph": self._graph(stage, path, top)}
                else:
                    stages[name] = {"type": "step", **self._step(name, stage, path, r)}
            return {"type": "pipeline", "order": list(r.stages), "stages": stages}
        raise AssertionError(type(r))

    def _inline_overrides(self, stage, pipeline) -> dict:
        """What an inline stage sets for itself over the pipeline's plan: its own `data` (replacing the pipeline's,
        as validation scopes it), `seed`, `launch`, `tracking`, `output`; its `vars` and `suites` add to the pipeline's."""
        out: dict[str, Any] = {"vars": {**(pipeline.vars or {}), **(stage.vars or {})},
                               "suites": {**{k: _dump(s) for k, s in pipeline.suites.items()},
                                          **{k: _dump(s) for k, s in stage.suites.items()}}}
        if stage.data is not None:
            out["data"] = self._data(stage)
        for key in ("seed", "launch", "tracking", "output"):
            if key in stage.model_fields_set:
                out[key] = getattr(stage, key) if key == "seed" else _dump(getattr(stage, key))
        return out

    def _when(self, expr: Optional[str], r, path: tuple) -> Any:
        """`when:` using only vars is decided now (True/False); one that needs the epoch stays an expression."""
        if expr is None:
            return True
        if expression_names(expr) <= {"vars"}:  # an inline stage sees the pipeline's vars under its own
            return evaluate_bool(expr, {"vars": {**self.recipe.vars, **(r.vars or {})}})
        return expr

    def _step(self, name: str, step, path: tuple, r) -> dict:
        tree = _subtree(self.v.tree, path)
        inputs, needs, prev = {}, set(), set()
        for sub, text in iter_strings(tree):
            for inner, whole in refs.find(text):
                ref = refs.parse(inner)
                for t in ref.alternatives:
                    if t.scope == "steps":
                        needs.add(t.parts[0])
                    elif t.scope == "prev":
                        prev.add(t.parts[1])
            if "${" in text and sub and sub[-1] != "save":
                inputs[".".join(map(str, sub))] = text
        params = _dump(step, exclude={"when", "save", "use"})
        if step.use == "evaluate":
            # a task's own values only (its defaults would hide the step's settings), then the suite's tasks
            params["tasks"] = {n: t.model_dump(mode="json", by_alias=True, exclude_unset=True) for n, t in step.tasks.items()}
            if step.suite:
                suite_tasks = self._suite_tasks(step.suite, {**self.recipe.suites, **(getattr(r, "suites", None) or {})})
                params["tasks"] = {**suite_tasks, **params["tasks"]}
                for task_name, task in suite_tasks.items():
                    for sub, text in iter_strings(task):
                        if "${" in text:
                            inputs.setdefault(".".join(map(str, ("tasks", task_name) + tuple(sub))), text)
        if getattr(step, "model", "absent") is None and step.use in ("train", "evaluate"):
            inputs["model"] = "${model}"
        entry: dict[str, Any] = {
            "use": step.use,
            "needs": sorted(needs),
            "uses_prev": sorted(prev),
            "inputs": inputs,
            "params": params,
            "outputs": {k: t.value for k, t in step.outputs().items()},
            "when": self._when(step.when, r, path),
            "save": step.save,
        }
        if isinstance(step, _TrainCommon):
            entry["launch"] = self._train_launch(step, path, r)
        return entry

    def _suite_tasks(self, name: str, suites: dict, seen: tuple = ()) -> dict:
        """The tasks of suite `name` with those of the suites it includes (included first), as set in the recipe."""
        suite = suites.get(name)
        if suite is None or name in seen:
            return {}
        out: dict[str, Any] = {}
        for other in suite.include:
            out.update(self._suite_tasks(other, suites, seen + (name,)))
        out.update({n: t.model_dump(mode="json", by_alias=True, exclude_unset=True) for n, t in suite.tasks.items()})
        return out

    def _train_launch(self, step: _TrainCommon, path: tuple, r) -> Optional[dict]:
        launch = r.launch
        try:
            cmd = launch_command(launch, TRAIN_PROGRAM, deepspeed_config_path="{step_dir}/ds_config.json")
            batch = plan_batch(per_device=step.batch_size, global_batch=step.global_batch_size,
                               grad_accum=step.gradient_accumulation, world_size=cmd.world_size,
                               path=path + ("global_batch_size" if step.global_batch_size else "batch_size",))
        except RecipeErrors as exc:
            for err in exc.errors:
                err.location = err.location or self.locate(err.path)
            self.errors.extend(exc.errors)
            return None
        precision = resolve_precision(launch.precision, launch.gpus)
        return {
            "launcher": cmd.launcher,
            "argv": cmd.argv,
            "env": cmd.env,
            "nodes": cmd.nodes,
            "processes_per_node": cmd.processes_per_node,
            "world_size": cmd.world_size,
            "precision": precision,
            "batch": {"per_device": batch.per_device, "gradient_accumulation": batch.grad_accum,
                      "world_size": batch.world_size, "global": batch.global_batch},
            "deepspeed_config": self._deepspeed(launch, batch, precision),
        }

    def _deepspeed(self, launch, batch, precision: str) -> Optional[dict]:
        ds = launch.deepspeed
        if ds is None:
            return None
        base = None
        if ds.config:
            where = self.locate(("launch", "deepspeed", "config"))
            file = resolve_local(ds.config, where)
            try:
                base = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                self.errors.add(f"cannot read DeepSpeed config '{ds.config}'", ("launch", "deepspeed", "config"),
                                why=str(exc), fix="give a readable JSON file (relative to the recipe)", location=where)
        return deepspeed_config(ds, batch, precision, base=base)


def _dump(block: Any, exclude: Optional[set] = None) -> Any:
    if block is None:
        return None
    return block.model_dump(mode="json", by_alias=True, exclude=exclude)


def _subtree(tree: Any, path: tuple) -> Any:
    node = tree
    for p in path:
        node = node.get(p, {}) if isinstance(node, dict) else {}
    return node
