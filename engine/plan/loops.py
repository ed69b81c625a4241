"""Loop execution for the Executor: epochs with a baseline, carried values, `loop.start_epoch`, stop criteria
(engine/plan/loop_stop.py), `output.retain`, and the per-epoch summary table (summary.json / summary.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

from engine.evaluate.compare import GateFailed
from engine.plan.loop_stop import NO_ROWS, LoopStop
from engine.plan.resolve import Frame, Missing, resolve_or_fail, resolve_value


class LoopExecution:
    """The loop half of `Executor` (engine/plan/execute.py), which provides `run`, `_frame`, `_step`, `_skip`
    and `_reused`."""

    def _loop(self, graph: dict, plan: dict, prefix: str, stages: Optional[dict] = None) -> Frame:
        """`stages`: the outputs of the earlier stages, when the loop is a pipeline stage."""
        stages = dict(stages or {})
        outer = self._frame(plan, stages=dict(stages))
        carry = {n: resolve_or_fail(c["init"], outer, f"loop.carry.{n}.init") for n, c in graph["carry"].items()}
        baseline = graph.get("baseline_skip")
        epochs = ([0] if baseline is not None else []) + list(range(1, graph["epochs"] + 1))
        start = int(graph.get("start_epoch") or 0)  # epochs before it are taken from --reuse RUN_DIR or the cache
        prev, frame, rows = None, outer, []
        stop, record = LoopStop(graph.get("stop")), f"{prefix}loop:stopped"
        stopped = self.run.state.outputs(record) if self.run.state.is_done(record) else None  # ended before a resume
        for epoch in epochs:
            if stopped is not None and epoch > stopped["epoch"]:
                break
            frame = self._frame(plan, prev=prev, carry=dict(carry), epoch=epoch, stages=dict(stages))
            gate, empty = None, False
            for name in graph["order"]:
                step_id = f"{prefix}epoch_{epoch}/{name}"
                if epoch == 0 and name in (baseline or []):
                    self._skip(step_id, "baseline epoch")
                    continue
                if epoch < start and self._reused(step_id, name, graph["steps"][name], frame, plan):
                    continue
                try:
                    self._step(step_id, name, graph["steps"][name], frame, plan, before_start=start if epoch < start else None)
                except GateFailed as exc:  # the step's work stands; the loop decides whether to go on
                    self._gate_failed(step_id, name, exc, frame)
                    gate = {"step": step_id, "name": name, "failures": exc.failures}
                empty = empty or (self.run.state.step(step_id) or {}).get("reason") == NO_ROWS
                if (gate and stop.on_gate_failure) or (stopped and stopped.get("step") == name and epoch == stopped["epoch"]):
                    break
            for n, c in graph["carry"].items():
                try:
                    carry[n] = resolve_value(c["next"], frame)
                except Missing:
                    pass  # nothing new this epoch (e.g. no rows to train on): keep the value
            self._retain(plan, graph, prefix, epoch, carry)
            row = self._summary_row(graph, frame, epoch)
            rows.append(row)
            prev = frame.steps
            decision = stopped or stop.after_epoch(epoch, gate=gate, empty=empty,
                                                   metric=lambda m, r=row, f=frame: self._loop_metric(m, r, f))
            if decision is not None and decision["epoch"] == epoch:
                if stopped is None:
                    self.run.state.mark_running(record)
                    self.run.state.mark_done(record, decision)
                    self.run.events.emit("loop_stopped", loop=prefix or "loop", **decision)
                stopped = decision
                break
        if graph.get("summary"):
            self._write_summary(graph["summary"], rows, prefix, stopped)
        frame.carry = carry
        return frame

    def _summary_row(self, graph: dict, frame: Frame, epoch: int) -> dict:
        row: dict[str, Any] = {"Epoch": epoch}
        for column, ref in ((graph.get("summary") or {}).get("columns") or {}).items():
            try:
                value = resolve_value(ref, frame)
            except Missing:
                value = None
            row[column] = value
        return row

    def _retain(self, plan: dict, graph: dict, prefix: str, epoch: int, carry: dict) -> None:
        """`output.retain: N`: keep the models of the newest N epochs (and the carried ones); older ones of this
        run are deleted (a later run's cache lookup then misses them, as it does for a deleted run)."""
        keep = (plan.get("output") or {}).get("retain")
        if not keep:
            return
        old = epoch - int(keep)  # the epoch that just left the window (earlier ones left it before)
        if old < 1:
            return
        carried = {str(v.get("path")) for v in carry.values() if isinstance(v, dict)}
        for name in (n for n in graph["order"] if graph["steps"][n]["use"] == "train"):
            model = self.run.state.outputs(f"{prefix}epoch_{old}/{name}").get("model") or {}
            path = Path(str(model.get("path") or ""))
            inside = path.is_relative_to(self.run.path / "steps") and not path.is_symlink()
            if model and inside and path.exists() and str(path) not in carried:
                shutil.rmtree(path)
                for link in (self.run.path / prefix).iterdir():  # the seed-layout link to it (RUN/epoch_N)
                    if link.is_symlink() and not link.exists():
                        link.unlink()
                self.run.events.emit("model_removed", step=f"{prefix}epoch_{old}/{name}", path=str(path), retain=keep)

    def _gate_failed(self, step_id: str, name: str, exc: GateFailed, frame: Frame) -> None:
        state = self.run.state
        state.mark_running(step_id)
        state.mark_done(step_id, exc.outputs)
        self.run.events.emit("gate_failed", step=step_id, failures=exc.failures)
        frame.steps[name] = exc.outputs

    @staticmethod
    def _loop_metric(metric: str, row: dict, frame: Frame) -> Any:
        """A plateau metric: a summary column of this epoch's row, or a `${...}` value."""
        if metric in row:
            return row[metric]
        try:
            return resolve_value(metric, frame)
        except Missing:
            return None

    def _write_summary(self, summary: dict, rows: list[dict], prefix: str, stopped: Optional[dict] = None) -> None:
        from engine.runs.atomic import atomic_write_json, atomic_write_text

        base = self.run.path / (prefix.replace("/", "_") + summary.get("save", "summary"))
        atomic_write_json(base.with_suffix(".json"), rows)
        columns = list(rows[0]) if rows else ["Epoch"]
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for r in rows:
            lines.append("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |")
        if stopped:
            lines += ["", f"Stopped after epoch {stopped['epoch']}: {stopped['reason']} ({stopped['detail']})."]
        atomic_write_text(base.with_suffix(".md"), "\n".join(lines) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)
