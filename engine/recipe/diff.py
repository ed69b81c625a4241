"""Semantic diff of two resolved recipe trees: added / removed / changed key paths with both values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.recipe.errors import format_path

_MISSING = object()


@dataclass(frozen=True)
class Change:
    op: str          # "added" | "removed" | "changed"
    path: tuple
    old: Any = None
    new: Any = None

    def as_dict(self) -> dict:
        return {"op": self.op, "path": format_path(self.path), "old": self.old, "new": self.new}


def diff_trees(a: Any, b: Any, path: tuple = ()) -> list[Change]:
    """Every leaf difference; mappings are compared key by key, lists and scalars as whole values.

    A mapping whose discriminator (`source`, `kind`, `use`, `method`, `type`) changed is reported as one change,
    like the merge rules treat it as one replaced block.
    """
    if isinstance(a, dict) and isinstance(b, dict) and not _discriminator_changed(a, b):
        out: list[Change] = []
        for key in list(a) + [k for k in b if k not in a]:
            va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
            if va is _MISSING:
                out.append(Change("added", path + (key,), None, vb))
            elif vb is _MISSING:
                out.append(Change("removed", path + (key,), va, None))
            else:
                out.extend(diff_trees(va, vb, path + (key,)))
        return out
    if a == b and type(a) is type(b):
        return []
    return [Change("changed", path, a, b)]


def _discriminator_changed(a: dict, b: dict) -> bool:
    return any(k in a and k in b and a[k] != b[k] for k in ("source", "kind", "use", "method", "type"))
