"""Load a recipe: its YAML files, then `include:`, profiles, `--set`/`--unset`.

The result is a plain tree (dict/list/str/int/float/bool/None) plus where each value was
written (`locations`) and which file, profile or override set it (`origins`). One file is read
by `engine.recipe.yaml_io`; the merge rules live in `engine.recipe.merge`. Every problem is
raised as `RecipeErrors`, never as a ruamel or OS exception.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ruamel.yaml import YAML

from engine.paths import shipped_dir
from engine.recipe.errors import ErrorCollector, Location, RecipeErrors, choose_from, display_path
from engine.recipe.merge import Layer, PathError, origins_of, rebase
from engine.recipe.yaml_io import Converter, parse_yaml, read_text

COMPOSITION_KEYS = ("include", "profiles")


@dataclass
class LoadedRecipe:
    """A recipe after include, profiles and overrides: the tree to validate, and where each value came from."""

    path: Path
    text: str
    tree: dict
    locations: dict[tuple, Location]
    origins: dict[tuple, str]
    profiles: dict[str, dict]
    applied_profiles: list[str]
    files: list[Path]

    def location(self, path: tuple) -> Location | None:
        """Where `path` was written, else its nearest written parent (so a missing key points at its block)."""
        for end in range(len(path), -1, -1):
            found = self.locations.get(tuple(path[:end]))
            if found is not None:
                return found
        return None


# ---------------------------------------------------------------- composition


class _Composer:
    """Loads a file and its includes (depth first, cycle-checked) and gathers the profiles they define."""

    def __init__(self, main: Path):
        self.main = main
        self.errors = ErrorCollector()
        self.files: list[Path] = []
        self.profiles: dict[str, dict] = {}
        self.profile_locations: dict[str, dict[tuple, Location]] = {}
        self.profiles_at: Location | None = None

    def name(self, path: Path) -> str:
        """How origins and messages name a file: relative to the main recipe's folder."""
        try:
            return Path(os.path.relpath(path, self.main.parent)).as_posix()
        except ValueError:  # another drive
            return str(path)

    def load(self, path: Path, chain: tuple[Path, ...] = (), text: str | None = None) -> Layer:
        if path not in self.files:
            self.files.append(path)
        layer = Layer()
        try:
            tree, locations = parse_yaml(read_text(path) if text is None else text, str(path), "a recipe")
        except RecipeErrors as err:
            self.errors.extend(err.errors)
            return layer
        for target, at, where in self.includes(tree, locations, path):
            if target in chain + (path,):
                cycle = " -> ".join(self.name(p) for p in chain + (path, target))
                self.errors.add(f"include cycle: {cycle}", at, why="a file cannot include itself, directly or through other files",
                                fix="remove one of these includes", location=where)
                continue
            included = self.load(target, chain + (path,))
            layer.add(included.tree, included.locations, included.origins)
        self.take_profiles(tree, locations)
        layer.add(tree, locations, origins_of(tree, self.name(path)))
        layer.tree = {**{key: layer.tree[key] for key in tree if key in layer.tree}, **layer.tree}  # own keys first
        return layer

    def includes(self, tree: dict, locations: dict[tuple, Location], path: Path) -> list[tuple[Path, tuple, Location | None]]:
        raw = tree.pop("include", None)
        if raw is None:
            return []
        if isinstance(raw, str):
            items: list[tuple[Any, tuple]] = [(raw, ("include",))]
        elif isinstance(raw, list):
            items = [(item, ("include", index)) for index, item in enumerate(raw)]
        else:
            self.errors.add("include must be a file path or a list of file paths", ("include",),
                            fix="e.g. include: [base.yaml]", location=locations.get(("include",)))
            return []
        found = []
        for item, at in items:
            where = locations.get(at)
            if not isinstance(item, str) or not item.strip():
                self.errors.add("an include must be a file path", at, fix="e.g. include: base.yaml", location=where)
                continue
            target = (path.parent / item).resolve()
            if not target.is_file():
                hint = self.nearby(item, target, path)
                self.errors.add(
                    f"included file not found: {item}", at, why=f"there is no file at {display_path(str(target))}",
                    fix=f"{hint + ' ' if hint else ''}include paths are relative to the folder of {self.name(path)}",
                    location=where,
                )
                continue
            found.append((target, at, where))
        return found

    @staticmethod
    def nearby(item: str, target: Path, including: Path) -> str:
        """'did you mean ...?' over the YAML files beside the missing one (compared without '.yaml')."""
        if not target.parent.is_dir():
            return ""
        files = {p.stem: p.name for p in target.parent.glob("*.y*ml") if p != including}
        match = difflib.get_close_matches(Path(item).stem, list(files), n=1, cutoff=0.6)
        return f"did you mean '{Path(item).with_name(files[match[0]]).as_posix()}'?" if match else ""

    def take_profiles(self, tree: dict, locations: dict[tuple, Location]) -> None:
        """Move `profiles:` out of the tree; a profile defined again (in a later file) replaces the earlier one."""
        if tree.get("profiles") is None:
            tree.pop("profiles", None)
            return
        raw = tree.pop("profiles")
        self.profiles_at = locations.get(("profiles",))
        if not isinstance(raw, dict):
            self.errors.add("profiles must be a mapping of NAME: {keys to change}", ("profiles",),
                            fix="e.g. profiles: {smoke: {loop: {epochs: 1}}}", location=self.profiles_at)
            return
        for name, body in raw.items():
            at = ("profiles", name)
            if body is None:  # `NAME: ~` removes a profile an included file defined
                self.profiles.pop(name, None)
                self.profile_locations.pop(name, None)
            elif not isinstance(body, dict):
                self.errors.add(f"profile '{name}' must be a mapping of keys to change", at, location=locations.get(at))
            elif any(key in body for key in COMPOSITION_KEYS):
                key = next(key for key in COMPOSITION_KEYS if key in body)
                self.errors.add(f"a profile cannot contain '{key}'", at + (key,),
                                why="profiles apply after includes are merged and profiles are chosen",
                                fix=f"move '{key}' to the top level of the recipe", location=locations.get(at + (key,)))
            else:
                self.profiles[name] = body
                self.profile_locations[name] = rebase(locations, at)


# ---------------------------------------------------------------- overrides


_PATH_PART = re.compile(r"([^.\[\]]+)((?:\[[0-9]+\])*)")


def _parse_path(text: str, where: Location, example: str) -> tuple:
    """'a.b[0].c' or 'a.b.0.c' -> ('a', 'b', 0, 'c')."""
    text = text.strip()
    parts: list[str | int] = []
    for piece in text.split("."):
        match = _PATH_PART.fullmatch(piece)
        if not match or match.group(1) != match.group(1).strip():
            raise RecipeErrors.one(
                f"malformed path '{text}'" if text else "empty path",
                why="a path is keys joined by '.', with [N] or .N for list items", fix=f"e.g. {example}", location=where,
            )
        name = match.group(1)
        parts.append(int(name) if re.fullmatch(r"[0-9]+", name) else name)
        parts.extend(int(index) for index in re.findall(r"[0-9]+", match.group(2)))
    if isinstance(parts[0], int):
        raise RecipeErrors.one(f"malformed path '{text}'", why="a recipe is a mapping: a path starts with a key",
                               fix=f"e.g. {example}", location=where)
    if parts[0] in COMPOSITION_KEYS:
        raise RecipeErrors.one(
            f"cannot override '{parts[0]}'", tuple(parts), why="include and profiles are resolved before overrides",
            fix="use --profile NAME, or edit the recipe", location=where,
        )
    return tuple(parts)


def parse_set(expr: str) -> tuple[tuple, object]:
    """'loop.steps.train.learning_rate=1e-5' -> (('loop', 'steps', 'train', 'learning_rate'), 1e-05). YAML 1.2 typed."""
    where = Location(f"<--set {expr}>")
    if "=" not in expr:
        raise RecipeErrors.one("--set needs PATH=VALUE", why=f"'{expr}' has no '='",
                               fix="e.g. --set loop.epochs=2", location=where)
    text, _, raw = expr.partition("=")
    path = _parse_path(text, where, "--set loop.steps.train.learning_rate=1e-5")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = YAML(typ="safe", pure=True).load(raw)
    except Exception as err:  # any ruamel error: the value is not YAML
        problem = getattr(err, "problem", None) or str(err)
        raise RecipeErrors.one(f"value is not valid YAML: {problem}", path,
                               why="the text after '=' is read as YAML (a number, true/false, [a list], {a: mapping} or text)",
                               fix="fix or quote it, e.g. --set 'name=\"a: b\"'", location=where) from None
    value, _ = Converter(None, root=path, fallback=where).run(data)
    return path, value


def _parse_unset(expr: str) -> tuple:
    where = Location(f"<--unset {expr}>")
    if "=" in expr:
        raise RecipeErrors.one("--unset takes a PATH, not PATH=VALUE", fix=f"use --set {expr}", location=where)
    return _parse_path(expr, where, "--unset model.revision")


# ---------------------------------------------------------------- the recipe


def load_recipe(
    source: str | Path, profiles: Sequence[str] = (), sets: Sequence[str] = (), unsets: Sequence[str] = ()
) -> LoadedRecipe:
    """Load a recipe file (or shipped recipe name): includes, then profiles in order, then --unset, then --set."""
    path = resolve_recipe_path(source)
    text = read_text(path)
    errors = ErrorCollector()
    parsed_unsets: list[tuple[str, tuple]] = []
    parsed_sets: list[tuple[str, tuple, Any]] = []
    for expr in unsets:
        try:
            parsed_unsets.append((expr, _parse_unset(expr)))
        except RecipeErrors as err:
            errors.extend(err.errors)
    for expr in sets:
        try:
            parsed_sets.append((expr, *parse_set(expr)))
        except RecipeErrors as err:
            errors.extend(err.errors)

    composer = _Composer(path)
    layer = composer.load(path, text=text)
    errors.extend(composer.errors.errors)
    errors.raise_if_any()

    for name in profiles:
        if name in composer.profiles:
            body = composer.profiles[name]
            layer.add(body, composer.profile_locations[name], origins_of(body, f"profile {name}"))
            continue
        known = list(composer.profiles)
        errors.add(
            f"unknown profile '{name}'", ("profiles", name),
            why="--profile picks one of the recipe's `profiles:`" if known else "the recipe defines no profiles",
            fix=choose_from(name, known) if known else f"remove --profile {name}",
            location=composer.profiles_at or Location(str(path)),
        )
    errors.raise_if_any()

    for expr, target in parsed_unsets:
        try:
            layer.unset(target)
        except PathError as err:
            errors.add(err.what, target, fix=err.fix, location=Location(f"<--unset {expr}>"))
    for expr, target, value in parsed_sets:
        where = Location(f"<--set {expr}>")
        try:
            layer.set(target, value, where, "--set")
        except PathError as err:
            errors.add(err.what, target, fix=err.fix, location=where)
    errors.raise_if_any()

    return LoadedRecipe(
        path=path, text=text, tree=layer.tree, locations=layer.locations, origins=layer.origins,
        profiles=composer.profiles, applied_profiles=list(profiles), files=composer.files,
    )


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """An existing file, else a shipped recipe by name ('quickstart', 'know_thyself/judgment')."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate.resolve()
    name = str(name_or_path)
    shipped = shipped_dir("recipes").resolve()
    for option in (shipped / f"{name}.yaml", shipped / name):
        option = option.resolve()
        if option.is_file() and option.is_relative_to(shipped):
            return option
    if candidate.is_dir():
        raise RecipeErrors.one("is a folder, not a recipe file", fix="name the recipe's .yaml file", location=Location(name))
    names = list_shipped_recipes()
    raise RecipeErrors.one(
        f"recipe not found: {name}", why="there is no such file, and no shipped recipe of that name",
        fix=choose_from(name, names, "a file path or a shipped recipe:") if names else "give the path of a recipe file",
        location=Location(name),
    )


def list_shipped_recipes() -> list[str]:
    """Names of the shipped recipes, e.g. ['know_thyself/judgment', 'quickstart']; '_'-prefixed parts are fragments."""
    root = shipped_dir("recipes")
    if not root.is_dir():
        return []
    names = []
    for file in root.rglob("*.yaml"):
        relative = file.relative_to(root)
        if not any(part.startswith(("_", ".")) for part in relative.parts):
            names.append(relative.with_suffix("").as_posix())
    return sorted(names)
