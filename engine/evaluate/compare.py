"""Compare two evaluations: per metric the delta, a paired 95% CI on shared items, and a verdict
(improvement / regression / within noise); items that flipped right <-> wrong; and warnings when the two
evaluations differ in a way that confounds the comparison (generator, chat template, prompt template, suite).
Gates (`fail_if`) turn a metric or a drop into a failed step.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from engine.evaluate.metrics import paired_comparison
from engine.recipe.errors import EngineError
from engine.runs.atomic import read_jsonl

CONFOUNDS = ("generator", "chat_template", "templates", "suite", "quantization", "max_new_tokens", "temperature")


class GateFailed(EngineError):
    """A `fail_if` gate failed. The step's work is done and kept in `outputs`: a loop records them and stops
    (`stop.on_gate_failure`) or goes on; outside a loop the run fails."""

    def __init__(self, message: str, outputs: Optional[dict] = None, failures: Iterable[str] = ()):
        super().__init__(message)
        self.outputs, self.failures = dict(outputs or {}), list(failures)


COUNTS = ("n", "n_scored", "n_correct", "failed")  # per-row bookkeeping of a scorer, not metrics


def metric_values(result: dict) -> dict[str, float]:
    """The per-item metric values of one scorer result (numbers, not flags or counts)."""
    return {key: float(value) for key, value in result.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in COUNTS}


def item_table(items_path: Optional[str]) -> dict[str, dict[str, float]]:
    """metric name -> {item id -> value} from an evaluation's per-row predictions file, under the names of the
    summary: `task.metric` (the task's main scorer), `task.scorer.metric`, and the overall `metric` (every task's
    rows, as the overall accuracy is row-weighted)."""
    if not items_path:
        return {}
    table: dict[str, dict[str, float]] = {}
    for row in read_jsonl(items_path):
        task, item = row.get("task"), str(row.get("id"))
        for key, value in (row.get("item_values") or {}).items():
            if value is not None:
                table.setdefault(f"{task}.{key}", {})[item] = float(value)
                table.setdefault(key, {})[f"{task}/{item}"] = float(value)
        for scorer, result in (row.get("scores") or {}).items():
            if isinstance(result, dict):
                for key, value in metric_values(result).items():
                    table.setdefault(f"{task}.{scorer}.{key}", {})[item] = value
    return table


def compare(baseline: dict, candidate: dict, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Compare two Metrics artifacts of evaluate steps (see module docstring)."""
    a, b = baseline.get("values") or {}, candidate.get("values") or {}
    sa, sb = a.get("summary") or {}, b.get("summary") or {}
    ia, ib = item_table(baseline.get("items")), item_table(candidate.get("items"))
    rows: list[dict[str, Any]] = []
    flipped: dict[str, dict] = {}
    for key in [k for k in sa if k in sb]:
        va, vb = sa[key], sb[key]
        if not isinstance(va, (int, float)) or not isinstance(vb, (int, float)) or isinstance(va, bool):
            continue
        entry: dict[str, Any] = {"metric": key, "baseline": va, "candidate": vb, "delta": vb - va}
        if key in ia and key in ib:
            pc = paired_comparison(ia[key], ib[key], n_boot=n_boot, seed=seed)
            entry.update(ci=pc["ci"], verdict=pc["verdict"], n_shared=pc["n_shared"], paired_delta=pc["delta"])
            if pc.get("flipped") and (pc["flipped"]["right_to_wrong"] or pc["flipped"]["wrong_to_right"]):
                flipped[key] = pc["flipped"]
        else:
            entry.update(ci=None, verdict="within noise" if vb == va else ("improvement" if vb > va else "regression"),
                         note="no per-item values: verdict from the point estimates only")
        rows.append(entry)
    return {
        "baseline": a.get("setup", {}).get("model"),
        "candidate": b.get("setup", {}).get("model"),
        "metrics": rows,
        "improvements": [r["metric"] for r in rows if r["verdict"] == "improvement"],
        "regressions": [r["metric"] for r in rows if r["verdict"] == "regression"],
        "within_noise": [r["metric"] for r in rows if r["verdict"] == "within noise"],
        "flipped": flipped,
        "warnings": confounds(a.get("setup") or {}, b.get("setup") or {}),
    }


def confounds(a: dict, b: dict) -> list[str]:
    out = []
    for key in CONFOUNDS:
        if key in a and key in b and a[key] != b[key]:
            out.append(f"the evaluations differ in {key} ({a[key]!r} vs {b[key]!r}): the comparison is confounded")
    return out


def check_gates(gates: Iterable[dict], values: dict, comparison: Optional[dict] = None) -> list[str]:
    """The failures of `fail_if` gates (empty when all pass)."""
    summary = {**(values.get("summary") or {}), **{k: v for k, v in values.items() if isinstance(v, (int, float))}}
    deltas = {r["metric"]: r for r in (comparison or {}).get("metrics", [])}
    failures = []
    for gate in gates:
        metric = gate["metric"]
        if metric not in summary:
            failures.append(f"gate on '{metric}': no such metric (metrics: {', '.join(sorted(summary))[:300]})")
            continue
        value = summary[metric]
        if gate.get("below") is not None and value is not None and value < gate["below"]:
            failures.append(f"{metric} = {value:.4g} is below {gate['below']}")
        if gate.get("drops_more_than") is not None:
            if metric not in deltas:
                failures.append(f"gate on '{metric}' drop: nothing to compare against (set `compare_to:`)")
            elif -deltas[metric]["delta"] > gate["drops_more_than"]:
                failures.append(f"{metric} dropped by {-deltas[metric]['delta']:.4g} "
                                f"(from {deltas[metric]['baseline']:.4g} to {value:.4g}), more than {gate['drops_more_than']}")
    return failures


def render_table(comparison: dict) -> list[tuple]:
    out = []
    for r in comparison["metrics"]:
        ci = f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]" if r.get("ci") else ""
        out.append((r["metric"], f"{r['baseline']:.4g}", f"{r['candidate']:.4g}", f"{r['delta']:+.4g}", ci, r["verdict"]))
    return out
