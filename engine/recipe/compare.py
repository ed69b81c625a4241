"""`recipe diff A B`: what changed between two recipes, or two runs — recipe, lock (package versions, input
fingerprints, seeds, git commit) and metrics, each with A and B side by side."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from engine.recipe.diff import diff_trees
from engine.recipe.errors import format_path

MAX_VALUE = 48  # characters of a value shown in a text column
_TIMING = re.compile(r"(_runtime|_per_second)$")  # wall-clock numbers differ between any two runs: not a change


def _is_run_dir(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "plan.json").is_file() and (p / "resolved.yaml").is_file()


def _resolved_tree(source: str) -> dict:
    if _is_run_dir(source):
        from engine.recipe.yaml_io import load_yaml_file

        tree, _ = load_yaml_file(Path(source) / "resolved.yaml", what="a resolved recipe")
        return tree
    from engine.recipe.loader import load_recipe

    return load_recipe(source).tree


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _run_info(path: Path) -> dict:
    info, state = _json(path / "run.json"), _json(path / "state.json")
    return {"path": str(path), "name": info.get("name"), "recipe_hash": info.get("recipe_hash"),
            "created": info.get("created"), "status": state.get("status")}


def compare_sources(a: str, b: str) -> dict:
    """A JSON-able comparison: recipe changes, and for two runs lock changes and metric deltas.

    For runs, metrics are the numbers of each run's metrics.json as `STEP.METRIC` (evaluations: their summary;
    comparisons: `STEP.METRIC.delta`; training and other steps: their top-level numbers), see
    `engine.runs.report_metrics.run_metrics`."""
    recipe = [c.as_dict() for c in diff_trees(_resolved_tree(a), _resolved_tree(b))]
    result: dict[str, Any] = {"a": a, "b": b, "recipe": recipe}
    if _is_run_dir(a) and _is_run_dir(b):
        from engine.runs.lock import diff_locks
        from engine.runs.report_metrics import run_metrics

        result["runs"] = {"a": _run_info(Path(a)), "b": _run_info(Path(b))}
        la, lb = _json(Path(a) / "lock.json"), _json(Path(b) / "lock.json")
        result["lock"] = [{"path": p, "a": va, "b": vb} for p, va, vb in diff_locks(la, lb)]
        ma, mb = run_metrics(_json(Path(a) / "metrics.json")), run_metrics(_json(Path(b) / "metrics.json"))
        metrics = []
        for key in [*ma, *(k for k in mb if k not in ma)]:
            va, vb = ma.get(key), mb.get(key)
            if va == vb or _TIMING.search(key):
                continue
            delta = vb - va if va is not None and vb is not None else None
            metrics.append({"metric": key, "a": va, "b": vb, "delta": delta})
        result["metrics"] = metrics
    result["different"] = bool(recipe or result.get("lock") or result.get("metrics"))
    return result


def _v(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _short(value: Any) -> str:
    text = "—" if value is None else (f"{value:.6g}" if isinstance(value, float) else _v(value))
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _columns(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths))).rstrip() for r in [header, *rows]]


def render_text(result: dict) -> str:
    lines: list[str] = []
    for side, info in (result.get("runs") or {}).items():
        lines.append(f"{side.upper()}: {info['path']}  ({info.get('name')}, recipe {info.get('recipe_hash')}, "
                     f"{info.get('status')}, created {info.get('created')})")
    if not result["recipe"]:
        lines.append("recipes: same")
    else:
        lines.append("recipe:")
        for c in result["recipe"]:
            if c["op"] == "added":
                lines.append(f"  + {c['path']}: {_v(c['new'])}")
            elif c["op"] == "removed":
                lines.append(f"  - {c['path']}: {_v(c['old'])}")
            else:
                lines.append(f"  ~ {c['path']}: {_v(c['old'])} -> {_v(c['new'])}")
    if "lock" in result:
        if not result["lock"]:
            lines.append("lock: same")
        else:
            lines.append("lock (versions, fingerprints, seeds, git):")
            lines += _columns(["path", "A", "B"], [[d["path"], _short(d["a"]), _short(d["b"])] for d in result["lock"]])
    if "metrics" in result:
        if not result["metrics"]:
            lines.append("metrics: same")
        else:
            lines.append("metrics:")
            lines += _columns(["metric", "A", "B", "delta"],
                              [[m["metric"], _short(m["a"]), _short(m["b"]),
                                f"{m['delta']:+.4g}" if m["delta"] is not None else ""] for m in result["metrics"]])
            lines.append("(paired CIs and verdicts of two evaluations: recipe compare A B)")
    return "\n".join(lines) + "\n"


__all__ = ["compare_sources", "render_text", "format_path"]
