"""Composition of recipe trees: deep merge with the rules of DESIGN.md "Composition".

Mappings deep-merge, lists and scalars replace, `~` (None) deletes a key, and a mapping whose
discriminator (`source`, `kind`, `use`, `method`, `type`) changes is replaced whole, so no
stale keys of the old variant survive. Inside the top-level `vars:` block `~` is a value (a
variable set to null, e.g. "no limit"), not a deletion: `--unset vars.NAME` deletes a variable.

Locations and origins are kept beside the tree as `{path: value}` maps. Each layer records
every path it wrote; layers are applied in order with `dict.update`, and `keep_existing`
finally drops the entries whose path no longer holds a value. Because a layer that writes a
value records every path inside it, the survivors always describe the last writer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, TypeVar

from engine.recipe.errors import Location, choose_from, format_path

DISCRIMINATORS = ("source", "kind", "use", "method", "type")

MISSING = object()
V = TypeVar("V")


def merge_into(base: dict, override: Mapping, path: tuple = ()) -> None:
    """Merge `override` onto `base` (the tree at `path`) in place. Values are copied, so `override` stays untouched."""
    for key, value in override.items():
        if value is None and path[:1] != ("vars",):
            base.pop(key, None)
            continue
        current = base.get(key, MISSING)
        if isinstance(value, dict):
            if not isinstance(current, dict) or discriminator_changed(current, value):
                current = base[key] = {}
            merge_into(current, value, path + (key,))
        else:
            base[key] = copy.deepcopy(value)


def discriminator_changed(current: Mapping, override: Mapping) -> bool:
    """True when `override` names a different variant than `current` (both give the key, values differ)."""
    return any(
        key in current and override.get(key) is not None and current[key] != override[key]
        for key in DISCRIMINATORS
    )


def node_at(tree: Any, path: tuple) -> Any:
    """The value at `path`, or `MISSING`. str parts index mappings, int parts index lists."""
    node = tree
    for part in path:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return MISSING
    return node


def walk(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every (path, value) below and including `path`, depth first, in insertion order."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, path + (index,))


def is_leaf(tree: Any, path: tuple) -> bool:
    """A path that has one origin: anything but a non-empty mapping, and everything inside a list."""
    node = tree
    for part in path:
        if isinstance(node, list):
            return True
        node = node[part]
    return not (isinstance(node, dict) and node)


def keep_existing(tree: dict, entries: dict[tuple, V], leaves_only: bool = False) -> dict[tuple, V]:
    """The entries whose path still exists in `tree` (and is a leaf when `leaves_only`), order kept."""
    kept: dict[tuple, V] = {}
    for path, entry in entries.items():
        if node_at(tree, path) is MISSING:
            continue
        if leaves_only and not is_leaf(tree, path):
            continue
        kept[path] = entry
    return kept


def rebase(entries: Mapping[tuple, V], prefix: tuple, onto: tuple = ()) -> dict[tuple, V]:
    """Entries strictly below `prefix`, re-rooted at `onto` (e.g. a profile's keys onto the root)."""
    n = len(prefix)
    return {onto + path[n:]: entry for path, entry in entries.items() if path[:n] == prefix and len(path) > n}


@dataclass
class Layer:
    """A tree with the locations and origins of its values, kept in step as changes are merged on top."""

    tree: dict = field(default_factory=dict)
    locations: dict[tuple, Location] = field(default_factory=dict)
    origins: dict[tuple, str] = field(default_factory=dict)

    def add(self, tree: Mapping, locations: Mapping[tuple, Location], origins: Mapping[tuple, str]) -> None:
        """Merge another tree on top, with where its values were written and who set them."""
        merge_into(self.tree, tree)
        self.record(locations, origins)

    def set(self, path: tuple, value: Any, where: Location, origin: str) -> None:
        """Merge `value` in at `path` (an override); PathError when the path cannot be followed."""
        stored = set_at(self.tree, path, value)
        if value is None:  # a deletion writes nothing
            self._forget_item(stored)
            self.record({}, {})
            return
        written = {stored[:end]: where for end in range(1, len(stored)) if stored[:end] not in self.locations}
        written.update((sub, where) for sub, _ in walk(value, stored))
        origins = {sub: origin for sub in written if node_at(self.tree, sub) is not MISSING and is_leaf(self.tree, sub)}
        self.record(written, origins)

    def unset(self, path: tuple) -> None:
        """Delete the value at `path`; PathError (with did-you-mean) when it does not exist."""
        self._forget_item(unset_at(self.tree, path))
        self.record({}, {})

    def _forget_item(self, path: tuple) -> None:
        """After deleting list item `path`, move the entries of the items after it down by one."""
        if not (path and isinstance(path[-1], int) and isinstance(node_at(self.tree, path[:-1]), list)):
            return
        depth, gone = len(path) - 1, path[-1]
        for entries in (self.locations, self.origins):
            moved = {}
            for key, entry in entries.items():
                if key[:depth] != path[:-1] or len(key) <= depth or key[depth] < gone:
                    moved[key] = entry
                elif key[depth] > gone:
                    moved[key[:depth] + (key[depth] - 1,) + key[depth + 1:]] = entry
            entries.clear()
            entries.update(moved)

    def record(self, locations: Mapping[tuple, Location], origins: Mapping[tuple, str]) -> None:
        """Note what the last change wrote, then forget entries whose value is gone (no stale locations)."""
        self.locations.update(locations)
        self.origins.update(origins)
        self.locations = keep_existing(self.tree, self.locations)
        self.origins = keep_existing(self.tree, self.origins, leaves_only=True)


def origins_of(tree: Any, origin: str) -> dict[tuple, str]:
    """`origin` for every leaf path of `tree` (see `is_leaf`), the root itself excepted."""
    return {path: origin for path, _ in walk(tree) if path and is_leaf(tree, path)}


class PathError(Exception):
    """A --set/--unset path that cannot be followed: `what` went wrong, `fix` says what to do."""

    def __init__(self, what: str, fix: str = ""):
        super().__init__(what)
        self.what = what
        self.fix = fix


def set_at(tree: dict, path: tuple, value: Any) -> tuple:
    """Merge `value` in at `path` (creating missing mappings) and return the path as stored.

    The rules of `merge_into` apply at the target: a mapping deep-merges, `~` deletes.
    """
    if value is None:
        try:
            return unset_at(tree, path)
        except PathError:
            return path  # deleting what is not there: nothing to do, nothing created
    parent, stored = _follow(tree, path[:-1], create=True)
    if isinstance(parent, dict):
        key = _mapping_key(parent, path[-1], stored, create=True)
        merge_into(parent, {key: value}, stored)
        return stored + (key,)
    if isinstance(parent, list):
        index = _list_index(parent, path[-1], stored)
        holder = {"item": parent[index]}
        merge_into(holder, {"item": value})
        parent[index] = holder["item"]
        return stored + (index,)
    raise PathError(f"{_where(stored)} is {_kind(parent)}, so nothing can be set inside it", "set the whole value instead")


def unset_at(tree: dict, path: tuple) -> tuple:
    """Delete the value at `path` and return the path as stored; PathError when it does not exist."""
    parent, stored = _follow(tree, path[:-1], create=False)
    if isinstance(parent, dict):
        key = _mapping_key(parent, path[-1], stored, create=False)
        del parent[key]
        return stored + (key,)
    if isinstance(parent, list):
        index = _list_index(parent, path[-1], stored)
        del parent[index]
        return stored + (index,)
    raise PathError(f"{_where(stored)} is {_kind(parent)}, so it has nothing inside to remove")


def _follow(tree: dict, path: tuple, create: bool) -> tuple[Any, tuple]:
    """The container at `path` and the path as stored; missing mappings are created when `create`."""
    node: Any = tree
    stored: tuple = ()
    for part in path:
        if isinstance(node, dict):
            key = _mapping_key(node, part, stored, create)
            node = node.setdefault(key, {})
            stored += (key,)
        elif isinstance(node, list):
            index = _list_index(node, part, stored)
            node = node[index]
            stored += (index,)
        else:
            raise PathError(f"{_where(stored)} is {_kind(node)}, so it cannot be indexed with '{part}'",
                            "only mappings and lists have values inside")
    return node, stored


def _mapping_key(node: dict, part: str | int, stored: tuple, create: bool) -> str:
    """The str key for `part` in `node`. An index (int) only names a key that exists, e.g. a step called '0'."""
    key = str(part)
    if key in node or (create and isinstance(part, str)):
        return key
    if isinstance(part, int):
        return _raise(f"{_where(stored)} is a mapping, not a list: it has no item [{part}]", _choices(key, node))
    return _raise(f"there is no '{key}' in {_where(stored)}", _choices(key, node))


def _choices(key: str, node: dict) -> str:
    return choose_from(key, node.keys()) if node else ""


def _list_index(items: list, part: str | int, stored: tuple) -> int:
    if not isinstance(part, int):
        return _raise(f"{_where(stored)} is a list: '{part}' is not an index", f"use an index, e.g. {_where(stored)}[0]")
    if part >= len(items):
        return _raise(f"index [{part}] is out of range: {_where(stored)} has {len(items)} item(s)")
    return part


def _raise(what: str, fix: str = "") -> Any:
    raise PathError(what, fix)


def _where(path: tuple) -> str:
    return format_path(path) if path else "the top level"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    return names.get(type(value), type(value).__name__)
