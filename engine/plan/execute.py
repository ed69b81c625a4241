"""Execute a plan in a run directory: steps in order, loops over epochs, pipelines over stages; resumable.

Each step records completion in state.json only after its executor returned (its outputs durable), so a
re-run of the same run directory (`recipe resume`) reuses every finished step and restarts at the first
unfinished one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Optional

from engine import catalog
from engine.data.fingerprints import short_hash
from engine.plan.cache import lookup, step_key, store
from engine.plan.context import StepContext
from engine.plan.resolve import Frame, Missing, resolve_or_fail, resolve_value
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


class StageSelection:
    """`--only` / `--from` / `--skip` over a pipeline's stages; unselected stages' outputs come from `--reuse RUN_DIR`."""

    def __init__(self, only: tuple = (), from_: Optional[str] = None, skip: tuple = (), reuse: Optional[Path] = None):
        self.only, self.from_, self.skip, self.reuse = tuple(only), from_, tuple(skip), reuse
        self._reuse_state = None

    def check(self, plan: dict) -> None:
        names = list(plan["graph"].get("stages", {}))
        asked = [*self.only, *self.skip, *([self.from_] if self.from_ else [])]
        if asked and plan["graph"]["type"] != "pipeline":
            raise EngineError("--only / --from / --skip select stages of a pipeline recipe; this recipe is a " + plan["kind"])
        for n in asked:
            if n not in names:
                from engine.recipe.errors import choose_from

                raise EngineError(f"no stage '{n}'; {choose_from(n, names)}")
        if self.reuse is not None and not (self.reuse / "state.json").is_file():
            raise EngineError(f"--reuse {self.reuse}: not a run directory (no state.json)")
        if asked and self.reuse is None:
            self._check_inputs(plan["graph"])

    def _check_inputs(self, graph: dict) -> None:
        """Without --reuse, a selected stage must not need the outputs of a stage that does not run."""
        chosen = self.stages(graph["order"])
        for name in chosen:
            refs = re.findall(r"\$\{([^{}|]+)\}", json.dumps(graph["stages"][name]))  # no fallback alternatives
            for other in graph["order"]:
                if other not in chosen and any(r.strip().startswith(f"stages.{other}.") for r in refs):
                    raise EngineError(f"stage '{name}' uses the outputs of stage '{other}', which this selection does not "
                                      f"run; add --reuse RUN_DIR (an earlier run of this pipeline that has them) or "
                                      f"select '{other}' too")

    def stages(self, order: list[str]) -> list[str]:
        chosen = list(order)
        if self.from_:
            chosen = chosen[chosen.index(self.from_):]
        if self.only:
            chosen = [n for n in chosen if n in self.only]
        return [n for n in chosen if n not in self.skip]

    def reused_outputs(self, record: str) -> Optional[dict]:
        if self.reuse is None:
            return None
        if self._reuse_state is None:
            from engine.runs.state import RunState

            self._reuse_state = RunState.load(self.reuse / "state.json")
        return self._reuse_state.outputs(record) if self._reuse_state.is_done(record) else None


class Executor:
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

    def _loop(self, graph: dict, plan: dict, prefix: str, stages: Optional[dict] = None) -> Frame:
        """`stages`: the outputs of the earlier stages, when the loop is a pipeline stage."""
        stages = dict(stages or {})
        outer = self._frame(plan, stages=dict(stages))
        carry = {n: resolve_or_fail(c["init"], outer, f"loop.carry.{n}.init") for n, c in graph["carry"].items()}
        baseline = graph.get("baseline_skip")
        epochs = ([0] if baseline is not None else []) + list(range(1, graph["epochs"] + 1))
        prev, frame, rows = None, outer, []
        for epoch in epochs:
            frame = self._frame(plan, prev=prev, carry=dict(carry), epoch=epoch, stages=dict(stages))
            for name in graph["order"]:
                step_id = f"{prefix}epoch_{epoch}/{name}"
                if epoch == 0 and name in (baseline or []):
                    self._skip(step_id, "baseline epoch")
                    continue
                self._step(step_id, name, graph["steps"][name], frame, plan)
            for n, c in graph["carry"].items():
                try:
                    carry[n] = resolve_value(c["next"], frame)
                except Missing:
                    pass  # nothing new this epoch (e.g. no rows to train on): keep the value
            rows.append(self._summary_row(graph, frame, epoch))
            prev = frame.steps
        if graph.get("summary"):
            self._write_summary(graph["summary"], rows, prefix)
        frame.carry = carry
        return frame

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
            sub_plan = stage["plan"] if stage["type"] == "recipe" else {**plan, "model": stage.get("model") or plan["model"]}
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

    def _step(self, step_id: str, name: str, entry: dict, frame: Frame, plan: dict) -> None:
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
            state.mark_skipped(step_id, "no rows to train on")
            self.run.events.emit("step_skipped", step=step_id, reason="no rows to train on")
            return
        save = entry.get("save")
        if save:
            save = render_string(resolve_or_fail(save, frame, f"{step_id}.save"), {"epoch": frame.epoch, "vars": plan.get("vars") or {}})
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

    # --- loop summary --------------------------------------------------------------------------------

    def _summary_row(self, graph: dict, frame: Frame, epoch: int) -> dict:
        row: dict[str, Any] = {"Epoch": epoch}
        for column, ref in ((graph.get("summary") or {}).get("columns") or {}).items():
            try:
                value = resolve_value(ref, frame)
            except Missing:
                value = None
            row[column] = value
        return row

    def _write_summary(self, summary: dict, rows: list[dict], prefix: str) -> None:
        from engine.runs.atomic import atomic_write_json, atomic_write_text

        base = self.run.path / (prefix.replace("/", "_") + summary.get("save", "summary"))
        atomic_write_json(base.with_suffix(".json"), rows)
        columns = list(rows[0]) if rows else ["Epoch"]
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for r in rows:
            lines.append("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |")
        atomic_write_text(base.with_suffix(".md"), "\n".join(lines) + "\n")


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


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)
