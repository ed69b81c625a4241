"""Execute a plan in a run directory: steps in order, loops over epochs, pipelines over stages; resumable.

Each step records completion in state.json only after its executor returned (its outputs durable), so a
re-run of the same run directory (`recipe resume`) reuses every finished step and restarts at the first
unfinished one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator, Optional

from engine import catalog
from engine.data.fingerprints import short_hash
from engine.plan.cache import lookup, step_key, store
from engine.plan.context import StepContext
from engine.plan.loop_stop import NO_ROWS
from engine.plan.loops import LoopExecution
from engine.plan.resolve import Frame, Missing, resolve_or_fail
from engine.plan.selection import StageSelection
from engine.recipe.errors import EngineError
from engine.recipe.expressions import evaluate_bool, render_string
from engine.runs.atomic import atomic_write_json
from engine.runs.run_dir import RunDir

EPHEMERAL = frozenset({"serve"})  # step types whose outputs live only as long as the run (servers)


def iter_plan_steps(graph: dict) -> Iterator[tuple[str, dict]]:
    """Every (name, step entry) of a graph, stages and sub-plans included."""
    if graph["type"] in ("steps", "loop"):
        yield from graph["steps"].items()
        return
    for name, stage in graph["stages"].items():
        if stage["type"] == "step":
            yield name, stage
        elif stage["type"] == "inline":
            yield from iter_plan_steps(stage["graph"])
        else:
            yield from iter_plan_steps(stage["plan"]["graph"])


def not_executable(plan: dict) -> list[str]:
    """What this version cannot execute yet, as readable lines (empty when everything can run)."""
    missing: dict[str, list[str]] = {}
    for name, step in iter_plan_steps(plan["graph"]):
        if not catalog.STEPS.is_executable(step["use"]):
            missing.setdefault(f"step type '{step['use']}'", []).append(name)
        method = step.get("params", {}).get("method")
        if step["use"] == "train" and method and not catalog.METHODS.is_executable(method):
            missing.setdefault(f"training method '{method}'", []).append(name)
    if plan.get("data") and plan["data"].get("sources") and not catalog.STEPS.is_executable("data"):
        missing.setdefault("data building (`data:` block)", [])
    return [f"{what} (step{'s' if len(names) > 1 else ''} {', '.join(sorted(set(names)))})" if names else what
            for what, names in missing.items()]


class Executor(LoopExecution):
    """Runs one plan in one run directory."""

    def __init__(self, run: RunDir, plan: dict, recipe_dir: Path, *, use_cache: bool = True,
                 selection: Optional["StageSelection"] = None):
        self.run, self.plan, self.recipe_dir, self.use_cache = run, plan, recipe_dir, use_cache
        self.selection = selection or StageSelection()
        self.resources: dict[str, Any] = {}
        self._data: dict[str, dict[str, dict]] = {}
        self._models: dict[str, dict] = {}

    # --- inputs resolved on demand -------------------------------------------------------------------

    def _data_output(self, name: str, plan: dict) -> dict:
        """A `data.*` output of this plan (a file stage's sub-plan has its own data), built on first use."""
        if not plan.get("data"):
            raise Missing(f"data.{name}")
        key = short_hash(plan["data"])
        if key not in self._data:
            from engine.plan.steps.data import build_outputs  # the `data` step type owns materialization

            self._data[key] = build_outputs(plan["data"], recipe_dir=self.recipe_dir, out_dir=self.run.path / "data",
                                            seed=plan["seed"], plan=plan)
        if name not in self._data[key]:
            raise Missing(f"data.{name}")
        return self._data[key][name]

    def _recipe_model(self, plan: dict) -> dict:
        """The plan's `${model}`, resolved (downloaded, converted, built) once per run."""
        source = plan.get("model")
        if source is None:
            raise Missing("model")
        key = short_hash(source)
        if key not in self._models:
            self._models[key] = catalog.MODEL_SOURCES.get(source["source"])(source, self.recipe_dir)
        return self._models[key]

    def _frame(self, plan: dict, **kw: Any) -> Frame:
        return Frame(data=lambda n: self._data_output(n, plan), model=lambda: self._recipe_model(plan),
                     variables=plan.get("vars") or {}, **kw)

    # --- running -------------------------------------------------------------------------------------

    def execute(self) -> None:
        self.selection.check(self.plan)
        problems = not_executable(self.plan)
        if problems:
            self.run.state.set_run_status("failed")
            self.run.events.emit("run_failed", error="not yet executable", what=problems)
            raise EngineError("not yet executable in this version: " + "; ".join(problems)
                              + ". The run directory records the plan; nothing was run.")
        state = self.run.state
        state.set_run_status("running")
        self.run.events.emit("run_started")
        try:
            self._graph(self.plan["graph"], self.plan, prefix="")
        except BaseException as exc:
            state.set_run_status("failed" if isinstance(exc, Exception) else "interrupted")
            self.run.events.emit("run_failed", error=str(exc))
            self._report()
            raise
        finally:
            self._release()
        self.run.write_metrics(self._metrics())
        state.set_run_status("done")
        self.run.events.emit("run_done")
        self._report()

    def _release(self) -> None:
        """Stop the run's servers and close its loaded generators."""
        from engine.generate.engines import POOL_KEY
        from engine.plan.steps.serve import stop_servers

        stop_servers(self.resources)
        pool = self.resources.pop(POOL_KEY, None)
        if pool is not None:
            pool.close()

    def _report(self) -> None:
        """report.md / report.html; a report that cannot be written is an event, never the run's error."""
        try:
            from engine.runs.report import write_report

            write_report(self.run.path)
        except Exception as exc:  # noqa: BLE001
            self.run.events.emit("report_failed", error=f"{type(exc).__name__}: {exc}")

    def _metrics(self) -> dict:
        """The run's metrics.json: every Metrics output by step id (the last epoch's under `final`)."""
        out: dict[str, Any] = {}
        for step_id, info in self.run.state.steps().items():
            if info.get("status") != "done" or step_id.endswith(":stage"):
                continue
            for name, artifact in (info.get("outputs") or {}).items():
                if isinstance(artifact, dict) and artifact.get("type") == "Metrics":
                    out.setdefault(step_id, {})[name] = artifact.get("values", {})
        return out

    def _graph(self, graph: dict, plan: dict, prefix: str, frame: Optional[Frame] = None) -> Frame:
        if graph["type"] == "steps":
            frame = frame or self._frame(plan)
            for name in graph["order"]:
                self._step(prefix + name, name, graph["steps"][name], frame, plan)
            return frame
        if graph["type"] == "loop":
            return self._loop(graph, plan, prefix, stages=frame.stages if frame is not None else None)
        return self._pipeline(graph, plan, prefix)

    def _pipeline(self, graph: dict, plan: dict, prefix: str) -> Frame:
        frame = self._frame(plan)
        selected = self.selection.stages(graph["order"]) if not prefix else list(graph["order"])
        for i, name in enumerate(graph["order"]):
            stage = graph["stages"][name]
            record = f"{prefix}{name}:stage"
            live = stage.get("use") in EPHEMERAL and not all(  # a server is started again for unfinished stages after it
                self.run.state.is_done(f"{prefix}{later}:stage") for later in graph["order"][i + 1:])
            if self.run.state.is_done(record) and not live:
                frame.stages[name] = self.run.state.outputs(record)
                continue
            if name not in selected:
                reused = self.selection.reused_outputs(record)
                if reused is not None:
                    frame.stages[name] = reused
                    self.run.state.mark_running(record)
                    self.run.state.mark_done(record, reused)
                    self.run.events.emit("stage_reused", stage=name, from_run=str(self.selection.reuse))
                else:
                    self._skip(record, "not selected (--only / --from / --skip)")
                continue
            if not self._enabled(stage.get("when", True), plan, None):
                self._skip(prefix + name, "when: false")
                continue
            if stage["type"] == "step":
                self._step(prefix + name, name, stage, frame, plan)
                if name in frame.steps:
                    frame.stages[name] = frame.steps[name]
                    self.run.state.mark_running(record)
                    self.run.state.mark_done(record, frame.stages[name])
                continue
            sub_plan = stage["plan"] if stage["type"] == "recipe" else {
                **plan, "model": stage.get("model") or plan["model"], **(stage.get("overrides") or {})}
            sub_graph = sub_plan["graph"] if stage["type"] == "recipe" else stage["graph"]
            inner = self._frame(sub_plan, stages=dict(frame.stages))
            inner = self._graph(sub_graph, sub_plan, prefix + name + "/", inner if sub_graph["type"] != "pipeline" else None)
            if sub_graph["type"] != "pipeline":  # a nested pipeline's outputs name its own stages
                inner.stages = frame.stages
            outputs = stage["outputs"] if stage["type"] == "inline" else sub_plan.get("outputs", {})
            frame.stages[name] = {k: resolve_or_fail(v, inner, f"stages.{name}.outputs.{k}") for k, v in outputs.items()}
            self.run.state.mark_running(record)
            self.run.state.mark_done(record, frame.stages[name])
        return frame

    def _enabled(self, when: Any, plan: dict, epoch: Optional[int]) -> bool:
        if isinstance(when, bool):
            return when
        return evaluate_bool(when, {"vars": plan.get("vars") or {}, "epoch": epoch})

    def _skip(self, step_id: str, reason: str) -> None:
        if not self.run.state.is_done(step_id):
            self.run.state.mark_skipped(step_id, reason)

    @staticmethod
    def _save_name(step_id: str, entry: dict, frame: Frame, plan: dict) -> Optional[str]:
        save = entry.get("save")
        if save:
            save = render_string(resolve_or_fail(save, frame, f"{step_id}.save"), {"epoch": frame.epoch, "vars": plan.get("vars") or {}})
        return save

    def _reused(self, step_id: str, name: str, entry: dict, frame: Frame, plan: dict) -> bool:
        """A step of an epoch before `loop.start_epoch`, taken from the `--reuse` run when that run has it."""
        if self.run.state.is_done(step_id):
            return False
        outputs = self.selection.reused_outputs(step_id)
        if outputs is None:
            return False
        _link_outputs(self.selection.reuse / "steps" / step_id, self.run.step_dir(step_id))
        self.run.state.mark_running(step_id)
        self.run.state.mark_done(step_id, outputs)
        self.run.events.emit("step_reused", step=step_id, from_run=str(self.selection.reuse), from_step=step_id)
        frame.steps[name] = outputs
        self._link_saved(step_id, self._save_name(step_id, entry, frame, plan))
        return True

    def _step(self, step_id: str, name: str, entry: dict, frame: Frame, plan: dict,
              before_start: Optional[int] = None) -> None:
        state = self.run.state
        ephemeral = entry["use"] in EPHEMERAL  # a live server is not a result: started again on resume, never cached
        if state.is_done(step_id) and not ephemeral:
            frame.steps[name] = state.outputs(step_id)
            return
        if not self._enabled(entry.get("when", True), plan, frame.epoch):
            self._skip(step_id, "when: false")
            return
        inputs = {k: resolve_or_fail(v, frame, f"{step_id}.{k}") for k, v in entry["inputs"].items()}
        data = inputs.get("data")
        if entry["use"] == "train" and isinstance(data, dict) and data.get("rows") == 0:
            state.mark_skipped(step_id, NO_ROWS)
            self.run.events.emit("step_skipped", step=step_id, reason=NO_ROWS)
            return
        save = self._save_name(step_id, entry, frame, plan)
        key = step_key(entry, inputs, seed=plan["seed"], epoch=frame.epoch, save_name=save)
        hit = lookup(key) if self.use_cache and not ephemeral else None
        if hit is not None:
            step_dir = self.run.step_dir(step_id)
            _link_outputs(Path(hit["run_dir"]) / "steps" / hit["step"], step_dir)
            atomic_write_json(step_dir / "reused.json", {"key": key, "from_run": hit["run_dir"], "from_step": hit["step"]})
            state.mark_running(step_id)
            state.mark_done(step_id, hit["outputs"])
            self.run.events.emit("step_reused", step=step_id, key=key, from_run=hit["run_dir"], from_step=hit["step"])
            frame.steps[name] = hit["outputs"]
            self._link_saved(step_id, save)
            return
        if before_start is not None:
            raise EngineError(f"loop.start_epoch is {before_start}, but step {step_id} of an earlier epoch is neither in a "
                              f"--reuse run nor in the step cache; pass --reuse RUN_DIR (the run that ran epochs before "
                              f"{before_start}), or lower loop.start_epoch")
        ctx = StepContext(step_id=step_id, step_dir=self.run.step_dir(step_id), step=entry, inputs=inputs, plan=plan,
                          run_dir=self.run.path, recipe_dir=self.recipe_dir, seed=plan["seed"], epoch=frame.epoch,
                          save_name=save, events=self.run.events, resources=self.resources)
        state.mark_running(step_id)
        self.run.events.emit("step_started", step=step_id, use=entry["use"])
        try:
            outputs = catalog.STEPS.get(entry["use"])(ctx)
        except Exception as exc:
            state.mark_failed(step_id, str(exc))
            self.run.events.emit("step_failed", step=step_id, error=str(exc))
            raise
        state.mark_done(step_id, outputs)
        if not ephemeral:
            store(key, outputs, run_dir=self.run.path, step_id=step_id)
        self.run.events.emit("step_done", step=step_id, key=key)
        frame.steps[name] = outputs
        self._link_saved(step_id, save)

    def _link_saved(self, step_id: str, save: Optional[str]) -> None:
        """A step's `save:` output also appears at the top of its run (or stage) directory, so a run has the layout
        of the experiment it reproduces (RUN/responses.jsonl, RUN/tested_epoch0.jsonl, RUN/epoch_1/, ...)."""
        if not save:
            return
        target = self.run.step_dir(step_id) / save
        parts = step_id.split("/")[:-1]
        if parts and re.fullmatch(r"epoch_\d+", parts[-1]):
            parts = parts[:-1]
        link = self.run.path.joinpath(*parts, save)
        if not parts and Path(save).parts[0] in _RUN_FILES:
            return  # the run's own records keep their names
        if not target.exists() or (link.exists() and not link.is_symlink()):
            return  # never over a real file or directory
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.link")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(target, link.parent), target_is_directory=target.is_dir())
        os.replace(tmp, link)  # the same name saved again (a loop without ${epoch} in it): the latest wins

_RUN_FILES = frozenset({"recipe.yaml", "resolved.yaml", "plan.json", "run.json", "state.json", "events.jsonl", "lock.json",
                        "metrics.json", "steps", "data", "summary.json", "summary.md", "report.md", "report.html", "report"})


def _link_outputs(source: Path, target: Path) -> None:
    """A reused step's directory shows the original's files (symbolic links), so every run has the full layout."""
    if not source.is_dir():
        return
    for entry in source.iterdir():
        link = target / entry.name
        if entry.name != "reused.json" and not link.exists() and not link.is_symlink():
            link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
