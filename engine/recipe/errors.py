"""Recipe errors: every problem carries file:line:col, the key path, what, why and how to fix.

Stages collect all the problems they find and raise them together as one `RecipeErrors`,
so a user fixes a recipe in one pass. The CLI prints `str(error)` and exits with code 2.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Location:
    """Where a key or value was written: a file (or `<--set>` / `<profile NAME>`) and a 1-based line/column."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        name = display_path(self.file)
        if self.line:
            return f"{name}:{self.line}:{self.col or 1}"
        return name


def display_path(file: str) -> str:
    """A path as messages show it: relative to the current directory when below it, else as given."""
    if file.startswith("<"):
        return file
    try:
        rel = os.path.relpath(file)
    except ValueError:  # different drive
        return file
    return file if rel.startswith("..") else rel


KeyPath = tuple  # tuple[str | int, ...]


def format_path(path: Sequence) -> str:
    """('loop', 'steps', 'train', 'lr') -> 'loop.steps.train.lr'; list indices as [i]."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class RecipeError:
    """One problem in a recipe. `str()` gives the one-line form the CLI prints."""

    what: str
    path: tuple = ()
    why: str = ""
    fix: str = ""
    location: Location | None = None

    def __str__(self) -> str:
        head = f"{self.location}: " if self.location else ""
        key = format_path(self.path)
        text = f"{head}{key + ': ' if key else ''}{self.what}"
        if self.why:
            text += f" — {self.why}"
        if self.fix:
            text += f"; {self.fix}"
        return text

    def sort_key(self) -> tuple:
        loc = self.location or Location("")
        return (loc.file, loc.line, loc.col, format_path(self.path), self.what)


class RecipeErrors(Exception):
    """One or more recipe problems, raised together."""

    def __init__(self, errors: Iterable[RecipeError]):
        unique: dict[str, RecipeError] = {}
        for err in errors:
            unique.setdefault(str(err), err)
        self.errors: list[RecipeError] = sorted(unique.values(), key=RecipeError.sort_key)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [str(e) for e in self.errors]
        n = len(lines)
        lines.append(f"{n} problem{'s' if n != 1 else ''} found")
        return "\n".join(lines)

    @classmethod
    def one(cls, what: str, path: tuple = (), why: str = "", fix: str = "", location: Location | None = None) -> "RecipeErrors":
        return cls([RecipeError(what=what, path=path, why=why, fix=fix, location=location)])


class ErrorCollector:
    """Accumulates errors; `raise_if_any()` raises them together."""

    def __init__(self) -> None:
        self.errors: list[RecipeError] = []

    def add(self, what: str, path: tuple = (), why: str = "", fix: str = "", location: Location | None = None) -> None:
        self.errors.append(RecipeError(what=what, path=tuple(path), why=why, fix=fix, location=location))

    def extend(self, errors: Iterable[RecipeError]) -> None:
        self.errors.extend(errors)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise RecipeErrors(self.errors)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """'did you mean X?' for the closest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else ""


def choose_from(name: str, choices: Iterable[str], noun: str = "one of") -> str:
    """A fix hint: did-you-mean when close, else the list of valid names."""
    choices = sorted(str(c) for c in choices)
    hint = did_you_mean(name, choices)
    listing = f"{noun} {', '.join(choices)}" if len(choices) <= 20 else f"{len(choices)} names (see `recipe list`)"
    return f"{hint} ({'use ' + listing})" if hint else f"use {listing}"


class EngineError(Exception):
    """An error while executing a run (not a recipe problem): printed without a traceback, exit code 1."""
