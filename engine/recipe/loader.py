"""Load a recipe: YAML with the file:line of every key, then `include:`, profiles, `--set`/`--unset`.

The result is a plain tree (dict/list/str/int/float/bool/None) plus where each value was
written (`locations`) and which file, profile or override set it (`origins`). The merge rules
live in `engine.recipe.merge`. Every problem is raised as `RecipeErrors`, never as a ruamel
or OS exception.
"""

from __future__ import annotations

import datetime
import difflib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.comments import TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarstring import LiteralScalarString

from engine.paths import shipped_dir
from engine.recipe.errors import ErrorCollector, Location, RecipeError, RecipeErrors, choose_from, display_path
from engine.recipe.merge import Layer, PathError, origins_of, rebase

MAX_NODES = 200_000  # values produced from one YAML text; caps alias expansion ("billion laughs")
MAX_DEPTH = 100
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


# ---------------------------------------------------------------- one YAML file


def load_yaml_file(path: Path, what: str = "a recipe") -> tuple[dict, dict[tuple, Location]]:
    """One YAML file as a plain mapping and the location of every key and list item (no include)."""
    path = Path(path)
    return _parse_yaml(_read_text(path), str(path.resolve()), what)


def _read_text(path: Path) -> str:
    where = Location(str(path))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecipeErrors.one("file not found", why=f"there is no file at {path}", location=where) from None
    except IsADirectoryError:
        raise RecipeErrors.one("is a folder, not a YAML file", location=where) from None
    except OSError as err:
        raise RecipeErrors.one("cannot read the file", why=err.strerror or str(err), location=where) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise RecipeErrors.one(
            "the file is not UTF-8 text",
            why=f"byte 0x{data[err.start]:02x} cannot be decoded",
            fix="save the file as UTF-8",
            location=Location(str(path), line, col),
        ) from None


def _parse_yaml(text: str, file: str, what: str) -> tuple[dict, dict[tuple, Location]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = YAML(typ="rt").load(text)
    except DuplicateKeyError as err:
        match = re.search(r'duplicate key "(.*?)" with value', str(err.problem))
        key = match.group(1) if match else "?"
        raise RecipeErrors.one(
            f"duplicate key '{key}'", _mapping_path(text, err.context_mark) + (key,),
            why="a key may appear once in a mapping (the later value would silently win)",
            fix="remove or rename one of them",
            location=_mark(file, err.problem_mark),
        ) from None
    except MarkedYAMLError as err:
        if "single document" in str(err.context):
            raise RecipeErrors.one(
                "more than one YAML document", why=f"{what} is a single document",
                fix="remove the '---' separator and what follows it", location=_mark(file, err.problem_mark),
            ) from None
        raise RecipeErrors([_syntax_error(err, file)]) from None
    except RecursionError:
        raise RecipeErrors.one("invalid YAML: nested too deeply", why=f"a recipe is never more than {MAX_DEPTH} levels deep",
                               fix="flatten the value", location=Location(file, 1, 1)) from None
    except Exception as err:  # ruamel raises plain errors too, e.g. ValueError for the date 2024-13-45
        raise RecipeErrors.one(f"invalid YAML: {err}", fix="quote the value to make it text", location=Location(file, 1, 1)) from None
    if not isinstance(data, dict):
        found = "the file is empty (or holds only comments)" if data is None else \
            f"the file holds {'a list' if isinstance(data, list) else 'a single value'}"
        raise RecipeErrors.one(
            f"{what} must be a mapping of keys", why=found,
            fix="write `key: value` lines at the top level", location=Location(file, 1, 1),
        )
    return _Converter(file).run(data)


# ruamel's problem text -> (what, why, fix) for the syntax errors people make most
_SYNTAX_HINTS = (
    ("found character '\\t'", "a tab character", "YAML indents with spaces only", "replace the tab with spaces"),
    ("mapping values are not allowed here", "a `key:` where a value was expected",
     "this line is indented deeper than its siblings, or a value contains ': '",
     "line this key up with the keys of its block, or quote the value"),
    ("could not find expected ':'", "a line that is not `key: value`",
     "inside a mapping every line is `key: value`, or a continuation indented under one", "add the ':' or fix the indentation"),
    ("expected <block end>", "a line indented differently from its block",
     "the keys of one block must start in the same column (an unclosed quote above also causes this)",
     "fix the indentation of this line, or close the quote above it"),
    ("found undefined alias", "an alias (*NAME) without its anchor (&NAME)", "an alias repeats a block marked earlier with &NAME",
     "define the anchor before the alias, or quote a value that starts with '*'"),
)


def _syntax_error(err: MarkedYAMLError, file: str) -> RecipeError:
    """A readable message for a YAML syntax error: where, what, and the usual cause."""
    problem, context = str(err.problem or ""), str(err.context or "")
    if "quoted scalar" in context and err.context_mark is not None:  # the quote that never closes
        return RecipeError("invalid YAML: unclosed quote", why="the quoted text that starts here has no closing quote",
                           fix="add the closing quote", location=_mark(file, err.context_mark))
    for needle, what, why, fix in _SYNTAX_HINTS:
        if needle in problem:
            return RecipeError(f"invalid YAML: {what}", why=why, fix=fix, location=_mark(file, err.problem_mark or err.context_mark))
    detail = "; ".join(part for part in (problem, context) if part)
    return RecipeError(f"invalid YAML: {detail}", fix="check the YAML syntax on this line and the one above it",
                       location=_mark(file, err.problem_mark or err.context_mark))


def _mapping_path(text: str, mark: Any) -> tuple:
    """The key path of the mapping that starts at `mark` (to name where a duplicate key is); () if unknown."""
    try:
        yaml = YAML(typ="rt")
        yaml.allow_duplicate_keys = True
        pending: list[tuple[tuple, Any]] = [((), yaml.load(text))]
    except Exception:  # the text is broken in another way too: name no path
        return ()
    for _ in range(MAX_NODES):
        if not pending:
            break
        path, node = pending.pop()
        if isinstance(node, dict) and (node.lc.line, node.lc.col) == (mark.line, mark.column):
            return path
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        pending.extend((path + (key,), value) for key, value in items if len(path) < MAX_DEPTH)
    return ()


def _mark(file: str, mark: Any) -> Location:
    return Location(file, mark.line + 1, mark.column + 1) if mark is not None else Location(file)


class _TooBig(Exception):
    def __init__(self, what: str, why: str, fix: str, path: tuple = ()):
        super().__init__(what)
        self.error = (what, why, fix)
        self.path = path


class _Converter:
    """ruamel round-trip data -> plain Python, recording locations; counts nodes so aliases cannot explode."""

    def __init__(self, file: str | None, root: tuple = (), fallback: Location | None = None):
        self.file = file
        self.root = root
        self.fallback = fallback
        self.locations: dict[tuple, Location] = {}
        self.errors = ErrorCollector()
        self.count = 0
        self.active: set[int] = set()

    def run(self, data: Any) -> tuple[Any, dict[tuple, Location]]:
        """The plain value and its locations; RecipeErrors for every unsupported key, tag or value."""
        if self.file is not None:
            self.locations[()] = Location(self.file)
        value = None
        try:
            value = self.convert(data, self.root)
        except _TooBig as err:
            what, why, fix = err.error
            at = err.path[: len(self.root) + 1]  # the top-level key being read when it happened
            self.errors.add(what, at, why=why, fix=fix, location=self.where(at) if at else self.where(()))
        self.errors.raise_if_any()
        return value, self.locations

    def where(self, path: tuple) -> Location | None:
        for end in range(len(path), -1, -1):
            if tuple(path[:end]) in self.locations:
                return self.locations[tuple(path[:end])]
        return self.fallback

    def note(self, path: tuple, lc: Any, how: str, index: Any) -> None:
        try:
            line, col = getattr(lc, how)(index)
        except (AttributeError, KeyError, IndexError, TypeError):  # merged (<<) keys have no position
            return
        if self.file is not None:
            self.locations[path] = Location(self.file, line + 1, col + 1)

    def convert(self, node: Any, path: tuple) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(f"too many values: more than {MAX_NODES:,} (alias expansion?)",
                          "anchors and aliases here expand to more values than any recipe has",
                          "remove the aliases (*NAME) that repeat large blocks", path)
        if id(node) in self.active:
            raise _TooBig("recursive alias", "an alias refers to a block that contains it", "remove that alias", path)
        if len(path) - len(self.root) > MAX_DEPTH:
            raise _TooBig(f"nested more than {MAX_DEPTH} levels deep", "a recipe is never that deep", "flatten the value", path)
        tag = getattr(getattr(node, "tag", None), "value", None)
        if isinstance(node, TaggedScalar) or (tag and not str(tag).startswith("tag:yaml.org,2002:")):
            self.errors.add(f"unsupported YAML tag {tag or node.tag}", path, fix="remove the tag", location=self.where(path))
            return None
        if isinstance(node, (dict, list)):
            self.active.add(id(node))
            try:
                return self.convert_mapping(node, path) if isinstance(node, dict) else self.convert_list(node, path)
            finally:
                self.active.discard(id(node))
        return self.convert_scalar(node, path)

    def convert_mapping(self, node: dict, path: tuple) -> dict:
        out: dict = {}
        lc = getattr(node, "lc", None)
        for key, value in node.items():
            if not isinstance(key, str):
                self.note(path + (str(key),), lc, "key", key)
                self.errors.add(f"key {key!r} is not a string", path, fix=f"quote it: '{key}'",
                                location=self.where(path + (str(key),)))
                continue
            self.note(path + (key,), lc, "key", key)
            out[key] = self.convert(value, path + (key,))
        return out

    def convert_list(self, node: list, path: tuple) -> list:
        lc = getattr(node, "lc", None)
        out = []
        for index, value in enumerate(node):
            self.note(path + (index,), lc, "item", index)
            out.append(self.convert(value, path + (index,)))
        return out

    def convert_scalar(self, node: Any, path: tuple) -> Any:
        if node is None:
            return None
        if isinstance(node, (bool, ScalarBoolean)):
            return bool(node)
        if isinstance(node, str):
            return str(node)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        if isinstance(node, datetime.date) and not isinstance(node, datetime.datetime):
            return node.isoformat()  # YAML 1.2 core has no dates: keep the text as written
        self.errors.add(f"unsupported value {node!r} ({type(node).__name__})", path,
                        fix="quote it to make it a string", location=self.where(path))
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
            tree, locations = _parse_yaml(_read_text(path) if text is None else text, str(path), "a recipe")
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
    value, _ = _Converter(None, root=path, fallback=where).run(data)
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
    text = _read_text(path)
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


# ---------------------------------------------------------------- writing


class _DumpRepresenter(RoundTripRepresenter):
    """Round-trip output without anchors, and `null` written out (a subclass: ruamel's registries are global)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def represent_none(self, data: Any) -> Any:
        return self.represent_scalar("tag:yaml.org,2002:null", "null")


_DumpRepresenter.add_representer(type(None), _DumpRepresenter.represent_none)


def dump_yaml(tree: dict) -> str:
    """Block-style YAML of a plain tree, key order kept; multi-line strings as `|` blocks. Deterministic."""
    yaml = YAML(typ="rt", pure=True)
    yaml.Representer = _DumpRepresenter
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    buffer = io.StringIO()
    yaml.dump(_for_dump(tree), buffer)
    return buffer.getvalue()


def _for_dump(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _for_dump(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_for_dump(item) for item in value]
    if isinstance(value, str) and "\n" in value:
        return LiteralScalarString(value)
    return value
