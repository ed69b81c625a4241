"""Recipe YAML in and out: one file as a plain tree with the file:line of every key, and deterministic dumps.

`load_yaml_file` reads one YAML file (no `include:`; that is `engine.recipe.loader`) into plain values
(dict/list/str/int/float/bool/None) plus the `Location` of every key and list item. Tags, non-string keys, dates
and other values a recipe cannot hold, duplicate keys, syntax errors and alias bombs become `RecipeErrors` that
say where and how to fix them, never ruamel or OS exceptions. `dump_yaml` writes a plain tree back as block YAML.
"""

from __future__ import annotations

import datetime
import io
import re
import warnings
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarstring import LiteralScalarString

from engine.recipe.errors import ErrorCollector, Location, RecipeError, RecipeErrors

MAX_NODES = 200_000  # values produced from one YAML text; caps alias expansion ("billion laughs")
MAX_DEPTH = 100


# ---------------------------------------------------------------- reading


def load_yaml_file(path: Path, what: str = "a recipe") -> tuple[dict, dict[tuple, Location]]:
    """One YAML file as a plain mapping and the location of every key and list item (no include)."""
    path = Path(path)
    return parse_yaml(read_text(path), str(path.resolve()), what)


def read_text(path: Path) -> str:
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


def parse_yaml(text: str, file: str, what: str) -> tuple[dict, dict[tuple, Location]]:
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
    return Converter(file).run(data)


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


class Converter:
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
