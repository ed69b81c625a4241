"""`recipe diff A B`: what changed between two recipes, or two runs (recipe, lock and metrics)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.recipe.diff import diff_trees
from engine.recipe.errors import format_path


def _is_run_dir(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "plan.json").is_file() and (p / "resolved.yaml").is_file()


def _resolved_tree(source: str) -> dict:
    if _is_run_dir(source):
        from engine.recipe.loader import load_yaml_file

        tree, _ = load_yaml_file(Path(source) / "resolved.yaml", what="a resolved recipe")
        return tree
    from engine.recipe.loader import load_recipe

    return load_recipe(source).tree


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def compare_sources(a: str, b: str) -> dict:
    """A JSON-able comparison: recipe changes, and for two runs lock changes and metric deltas."""
    recipe = [c.as_dict() for c in diff_trees(_resolved_tree(a), _resolved_tree(b))]
    result: dict[str, Any] = {"a": a, "b": b, "recipe": recipe}
    if _is_run_dir(a) and _is_run_dir(b):
        from engine.runs.lock import diff_locks

        la, lb = _json(Path(a) / "lock.json"), _json(Path(b) / "lock.json")
        result["lock"] = [{"path": p, "a": va, "b": vb} for p, va, vb in diff_locks(la, lb)]
        ma, mb = _flat(_json(Path(a) / "metrics.json")), _flat(_json(Path(b) / "metrics.json"))
        metrics = []
        for key in sorted(set(ma) | set(mb)):
            va, vb = ma.get(key), mb.get(key)
            if va == vb:
                continue
            delta = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
            metrics.append({"metric": key, "a": va, "b": vb, "delta": delta})
        result["metrics"] = metrics
    result["different"] = bool(recipe or result.get("lock") or result.get("metrics"))
    return result


def _v(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def render_text(result: dict) -> str:
    lines: list[str] = []
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
        lines.append("lock:" if result["lock"] else "lock: same")
        lines.extend(f"  ~ {d['path']}: {_v(d['a'])} -> {_v(d['b'])}" for d in result["lock"])
    if "metrics" in result:
        lines.append("metrics:" if result["metrics"] else "metrics: same")
        for m in result["metrics"]:
            delta = f"  ({m['delta']:+.4g})" if m["delta"] is not None else ""
            lines.append(f"  ~ {m['metric']}: {_v(m['a'])} -> {_v(m['b'])}{delta}")
    return "\n".join(lines) + "\n"


__all__ = ["compare_sources", "render_text", "format_path"]
