"""One generic registry for every pluggable family (methods, backends, generators, scorers, adapters, steps...).

Entries are registered lazily as "module:attr" strings, so listing names and validating a recipe never
imports an implementation. Plugins add entries through the entry-point group `recipe_engine.plugins`,
with entry-point names of the form `FAMILY.NAME` (e.g. `scorer.my_metric = my_pkg.scorers:MyMetric`).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any, Callable, Generic, Iterator, TypeVar

from engine.recipe.errors import EngineError, choose_from

T = TypeVar("T")

PLUGIN_GROUP = "recipe_engine.plugins"


class UnknownName(KeyError):
    """A name that is not registered in a family; the message carries did-you-mean."""

    def __init__(self, family: str, name: str, known: list[str]):
        self.family, self.name, self.known = family, name, known
        super().__init__(f"unknown {family} '{name}'; {choose_from(name, known)}")

    def __str__(self) -> str:  # KeyError quotes its argument otherwise
        return self.args[0]


class NotExecutable(EngineError):
    """A name the recipe language knows whose execution is not available in this version."""


_DECLARED = object()


class Registry(Generic[T]):
    """Maps names to implementations; values may be objects or lazy 'module:attr' strings."""

    def __init__(self, family: str, description: str = ""):
        self.family = family
        self.description = description
        self._entries: dict[str, Any] = {}
        self._help: dict[str, str] = {}
        self._plugins_loaded = False

    def register(self, name: str, target: Any = None, *, help: str = "") -> Any:
        """`reg.register("sft", "engine.methods.sft:SFT")`, or as a decorator: `@reg.register("sft")`."""
        if target is None:
            def decorator(obj: Callable) -> Callable:
                self._entries[name] = obj
                self._help.setdefault(name, help or (obj.__doc__ or "").strip().split("\n")[0])
                return obj
            return decorator
        self._entries[name] = target
        if help:
            self._help[name] = help
        return target

    def declare(self, name: str, *, help: str = "") -> None:
        """Make a name valid in recipes before its implementation exists; `get` then says it is not executable."""
        self._entries.setdefault(name, _DECLARED)
        if help:
            self._help[name] = help

    def is_executable(self, name: str) -> bool:
        return name in self and self._entries[name] is not _DECLARED

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        prefix = self.family + "."
        for ep in metadata.entry_points(group=PLUGIN_GROUP):
            if ep.name.startswith(prefix):
                self._entries.setdefault(ep.name[len(prefix):], ep.value)

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def help(self, name: str) -> str:
        return self._help.get(name, "")

    def get(self, name: str) -> T:
        """The implementation for `name`, importing it on first use."""
        self._load_plugins()
        if name not in self._entries:
            raise UnknownName(self.family, name, self.names())
        entry = self._entries[name]
        if entry is _DECLARED:
            raise NotExecutable(f"{self.family} '{name}' is part of the recipe language but not yet executable in this version")
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
            self._entries[name] = entry = obj
        return entry
