"""When a loop stops before its last epoch (`loop.stop`).

- `on_gate_failure` (default true): a step's `fail_if` gate failed. The step's work is kept (its outputs are
  recorded, its gates.json says what failed) and the loop ends with that epoch; the run goes on and finishes.
  With `false` the failure is recorded and the epoch continues.
- `plateau: {metric, patience, min_delta, mode}`: the metric (a summary column title or a `${...}` value) did
  not improve on its best by more than `min_delta` for `patience` epochs in a row; the baseline epoch counts.
- `on_empty: stop`: an epoch had nothing to train on (its train step was skipped for lack of rows).

The decision is recorded in state.json (record `LOOP:stopped`), so `recipe resume` ends the loop where the
interrupted run had ended it; it also goes to events.jsonl (`loop_stopped`) and under the summary table.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

NO_ROWS = "no rows to train on"


class LoopStop:
    def __init__(self, stop: Optional[dict]):
        stop = stop or {}
        self.on_gate_failure = stop.get("on_gate_failure", True)
        self.on_empty = stop.get("on_empty", "skip")
        self.plateau = stop.get("plateau")
        self.best: Optional[float] = None
        self.stale = 0

    def after_epoch(self, epoch: int, *, gate: Optional[dict], empty: bool, metric: Callable[[str], Any]) -> Optional[dict]:
        """The reason to stop after this epoch, or None. `metric(name)` reads the plateau metric of this epoch."""
        if gate is not None and self.on_gate_failure:
            return {"epoch": epoch, "reason": "gate", "detail": f"{gate['step']}: " + "; ".join(gate["failures"]),
                    "step": gate["name"]}
        if empty and self.on_empty == "stop":
            return {"epoch": epoch, "reason": "empty", "detail": "nothing to train on"}
        if self.plateau:
            return self._plateau(epoch, metric(self.plateau["metric"]))
        return None

    def _plateau(self, epoch: int, value: Any) -> Optional[dict]:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None  # no value this epoch (e.g. the metric is not computed in the baseline): nothing to compare
        value = float(value) if self.plateau.get("mode", "max") == "max" else -float(value)
        if self.best is None or value > self.best + float(self.plateau.get("min_delta", 0.0)):
            self.best, self.stale = value, 0
            return None
        self.stale += 1
        if self.stale >= int(self.plateau.get("patience", 2)):
            return {"epoch": epoch, "reason": "plateau",
                    "detail": f"{self.plateau['metric']} did not improve for {self.stale} epoch{'s' if self.stale != 1 else ''}"}
        return None
