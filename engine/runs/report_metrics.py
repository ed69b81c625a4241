"""The numbers of a run's metrics, read for people: evaluations' headline accuracies, comparisons as table rows and
notes (report.md / report.html and `recipe compare`), a run's metrics.json flattened to `STEP.METRIC` (`recipe
compare`) and its few headline numbers (`recipe runs`). Loop step ids carry `epoch_N/`: `last_epoch` keeps the last.
"""

from __future__ import annotations

import json
import re
from typing import Optional

from engine.runs.report_render import ci_text, fmt

EPOCH = re.compile(r"(?:^|/)epoch_(\d+)/")
HEADLINE = ("accuracy.delta", "accuracy", "auroc", "qa_accuracy", "train_loss")


# ------------------------------------------------------------------------------------------------ evaluations


def headline(values: dict, task: str) -> tuple[Optional[float], Optional[list]]:
    """(accuracy, [low, high]) of one task of an evaluation's metrics (judgment or scored)."""
    t = (values.get("tasks") or {}).get(task) or {}
    if "judgment" in t:
        ci = t.get("accuracy_ci") or {}
        return t["judgment"].get("accuracy"), [ci["low"], ci["high"]] if ci.get("low") is not None else None
    scorers = t.get("scorers") or {}
    want = (values.get("summary") or {}).get(f"{task}.accuracy")
    candidates = [m["accuracy"] for m in scorers.values() if isinstance(m.get("accuracy"), dict)]
    chosen = next((c for c in candidates if c.get("value") == want), candidates[0] if candidates else {})
    return chosen.get("value"), chosen.get("ci")


def last_epoch(step_ids: list[str]) -> list[str]:
    """The step ids of the last loop epoch, and those outside loops."""
    epochs = [int(m.group(1)) for s in step_ids if (m := EPOCH.search(s))]
    if not epochs:
        return step_ids
    return [s for s in step_ids if f"epoch_{max(epochs)}/" in s or not EPOCH.search(s)]


# ------------------------------------------------------------------------------------------------ comparisons


def comparison_rows(comparison: dict, brief: bool = False) -> list[list[str]]:
    """Table rows of a comparison; `brief` leaves out TASK.SCORER.METRIC rows that repeat TASK.METRIC and the
    overall METRIC rows that repeat a single task's."""
    rows = comparison.get("metrics") or []
    if brief:
        kept = set(plotted_metrics([r["metric"] for r in rows], limit=None))
        rows = [r for r in rows if r["metric"] in kept]
    return [[r["metric"], fmt(r.get("baseline")), fmt(r.get("candidate")),
             f"{r['delta']:+.4g}" if isinstance(r.get("delta"), (int, float)) else "—", ci_text(r.get("ci")), r.get("verdict", "")]
            for r in rows]


def comparison_notes(comparison: dict) -> list[str]:
    """improvements / regressions / flips / confound warnings, one readable line each (the JSON has every metric)."""
    def shown(metrics: list[str]) -> list[str]:  # without the rows that repeat another (as the brief table)
        kept = set(plotted_metrics(list(metrics), limit=None))
        return [m for m in metrics if m in kept]

    lines = [f"improvements: {', '.join(shown(comparison.get('improvements') or [])) or 'none'}",
             f"regressions: {', '.join(shown(comparison.get('regressions') or [])) or 'none'}"]
    flipped = comparison.get("flipped") or {}
    groups: dict[str, list[str]] = {}  # metrics whose items flipped alike share one line
    for metric in shown(list(flipped)):
        groups.setdefault(json.dumps(flipped[metric], sort_keys=True, default=str), []).append(metric)
    for key, metrics in groups.items():
        flips = json.loads(key)
        better, worse = flips.get("wrong_to_right") or [], flips.get("right_to_wrong") or []
        lines.append(f"flipped on {', '.join(metrics)}: {len(better)} wrong→right{_ids(better)}, "
                     f"{len(worse)} right→wrong{_ids(worse)}")
    lines += [f"warning: {w}" for w in comparison.get("warnings") or []]
    return lines


def _ids(items: list, shown: int = 10) -> str:
    if not items:
        return ""
    return f" ({', '.join(map(str, items[:shown]))}{', …' if len(items) > shown else ''})"


def plotted_metrics(names: list[str], limit: Optional[int] = 16) -> list[str]:
    """Drop TASK.SCORER.METRIC when TASK.METRIC is there, and the overall METRIC when there is a single task."""
    present = set(names)
    tasks = {n.split(".")[0] for n in names if n.count(".") == 1}
    keep = [n for n in names if not (n.count(".") == 2 and f"{n.split('.')[0]}.{n.split('.')[2]}" in present)
            and not (n.count(".") == 0 and len(tasks) == 1 and f"{next(iter(tasks))}.{n}" in present)]
    return keep[:limit]


# ------------------------------------------------------------------------------------------------ metrics of a run


def run_metrics(metrics: dict) -> dict[str, float]:
    """The numbers of a run's metrics.json, flat: `STEP.METRIC` (evaluations: their `summary`; comparisons:
    `STEP.METRIC.delta`; other Metrics outputs: their top-level numbers)."""
    out: dict[str, float] = {}
    for step_id, step_outputs in (metrics or {}).items():
        for values in (step_outputs or {}).values() if isinstance(step_outputs, dict) else ():
            if not isinstance(values, dict):
                continue
            if isinstance(values.get("summary"), dict):
                values = values["summary"]
            elif isinstance(values.get("metrics"), list):
                values = {f"{r['metric']}.delta": r.get("delta") for r in values["metrics"] if isinstance(r, dict) and "metric" in r}
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[f"{step_id}.{key}"] = value
    return out


def key_metrics(metrics: dict, limit: int = 4) -> dict[str, float]:
    """A few headline numbers for `recipe runs`: deltas of comparisons, accuracies, AUROC, QA accuracy, train loss;
    within a loop only the last epoch's."""
    latest: dict[tuple[str, str], tuple[str, float]] = {}
    for key, value in run_metrics(metrics).items():
        step, _, metric = key.partition(".")  # step ids have no dots; metric names may
        if metric in HEADLINE:
            latest[(EPOCH.sub("/", step + "/").strip("/"), metric)] = (key, value)
    ordered = sorted(latest.values(), key=lambda kv: HEADLINE.index(kv[0].partition(".")[2]))
    return dict(ordered[:limit])

