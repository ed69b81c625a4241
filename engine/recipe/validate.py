"""Validation: substitute `${vars.*}`, validate with the Pydantic models, then the semantic checks.

Every problem is collected and raised at once as `RecipeErrors`, each with file:line:col and a fix.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from pydantic import TypeAdapter, ValidationError

from engine.recipe.errors import ErrorCollector, Location, RecipeError, choose_from, did_you_mean
from engine.recipe.loader import LoadedRecipe
from engine.recipe.models.common import REF_PATTERN, REF_RE
from engine.recipe.models.recipe import FORMAT_VERSION, Recipe
from engine.recipe.navigate import field_names, model_at

Locate = Callable[[tuple], Optional[Location]]
_ADAPTER = TypeAdapter(Recipe)
_DISCRIMINATORS = ("kind", "use", "method", "source", "type")
_VAR_RE = re.compile(r"\$\{\s*vars\.([A-Za-z_][\w\-]*(?:\.[A-Za-z_][\w\-]*)*)\s*\}")


@dataclass
class ValidatedRecipe:
    """A recipe that passed every check: the typed model plus what compile and run need."""

    loaded: LoadedRecipe
    tree: dict                       # after `${vars.*}` substitution: what the models validated
    recipe: Any                      # TrainRecipe | EvalRecipe | LoopRecipe | PipelineRecipe
    trust: list[str] = field(default_factory=list)     # options that run arbitrary code
    stage_recipes: dict[str, "ValidatedRecipe"] = field(default_factory=dict)  # pipeline stages from files


def validate(loaded: LoadedRecipe, *, check_files: bool = True, _stack: tuple = (),
             _stages: Optional[dict] = None) -> ValidatedRecipe:
    """Validate a loaded recipe; raise RecipeErrors with every problem found.

    `_stages` (the earlier stages of the pipeline that runs this file as a stage) may be referenced as
    `${stages.NAME.OUTPUT}`, e.g. from the stage's `set:`."""
    errors = ErrorCollector()
    tree = loaded.tree
    version = tree.get("recipe")
    if version is None:
        errors.add("missing `recipe: 1`", ("recipe",), why="the format version tells the engine how to read the file",
                   fix="add `recipe: 1` as the first line", location=Location(str(loaded.path), 1, 1))
    elif version != FORMAT_VERSION:
        errors.add(f"unsupported recipe format version {version!r}", ("recipe",),
                   why=f"this engine reads version {FORMAT_VERSION}", fix="write `recipe: 1`", location=loaded.location(("recipe",)))
    tree = substitute_vars(tree, loaded.location, errors)
    recipe = None
    try:
        recipe = _ADAPTER.validate_python(tree)
    except ValidationError as exc:
        unresolved = {e.path for e in errors.errors}  # a value whose ${vars.X} failed was reported already
        errors.extend(e for e in pydantic_errors(exc, tree, loaded.location)
                      if not any(e.path[: len(u)] == u for u in unresolved))
    if recipe is None:
        errors.raise_if_any()
        raise AssertionError("unreachable")
    validated = ValidatedRecipe(loaded=loaded, tree=tree, recipe=recipe)
    from engine.recipe.checks import check_recipe  # local: checks imports templates and expressions

    check_recipe(validated, errors, check_files=check_files, stack=_stack, outer_stages=_stages)
    errors.raise_if_any()
    return validated


# --- vars ----------------------------------------------------------------------------------------------


def _lookup_var(variables: dict, dotted: str) -> tuple[bool, Any]:
    node: Any = variables
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False, None
    return True, node


def substitute_vars(tree: dict, locate: Locate, errors: ErrorCollector) -> dict:
    """Replace `${vars.X}` everywhere but in `vars:` blocks themselves; a whole-value reference keeps the value's
    type. An inline pipeline stage (`stages.NAME` with `kind:`) sees its own `vars:` over the pipeline's."""
    top = tree.get("vars") or {}
    if not isinstance(top, dict):
        return tree

    def sub(node: Any, path: tuple, variables: dict) -> Any:
        if isinstance(node, dict):
            scope = path == () or (len(path) == 2 and path[0] == "stages" and "kind" in node)
            if scope and path != () and isinstance(node.get("vars"), dict):
                variables = {**variables, **node["vars"]}
            return {k: (v if scope and k == "vars" else sub(v, path + (k,), variables)) for k, v in node.items()}
        if isinstance(node, list):
            return [sub(v, path + (i,), variables) for i, v in enumerate(node)]
        if not isinstance(node, str) or "${" not in node:
            return node
        whole = _VAR_RE.fullmatch(node.strip())
        if whole:
            found, value = _lookup_var(variables, whole.group(1))
            if found:
                return copy.deepcopy(value)

        def repl(m: re.Match) -> str:
            found, value = _lookup_var(variables, m.group(1))
            if not found:
                name = m.group(1)
                errors.add(f"unknown variable '${{vars.{name}}}'", path,
                           why="references must name a key of the `vars:` block",
                           fix=did_you_mean(name.split(".")[0], variables) or f"add `{name.split('.')[0]}:` under `vars:`",
                           location=locate(path))
                return m.group(0)
            return str(value)
        return _VAR_RE.sub(repl, node)

    return sub(tree, (), top)


# --- pydantic errors -> recipe errors ------------------------------------------------------------------


def _tree_path(tree: Any, loc: tuple, keep_missing_key: bool = False) -> tuple:
    """Map a pydantic error location to a key path of the tree, dropping union tags and validator labels.

    `keep_missing_key`: the last element names a key that is not in the tree (a `missing` error): keep it.
    """
    path: list = []
    node = tree
    tags_seen: set = set()
    for i, part in enumerate(loc):
        tags = {node.get(k) for k in _DISCRIMINATORS if isinstance(node.get(k), str)} if isinstance(node, dict) else set()
        if isinstance(part, str) and part in tags and part not in tags_seen:
            tags_seen.add(part)  # the tag of a discriminated union, not a key
            continue
        if isinstance(node, dict) and part in node:
            following = loc[i + 1] if i + 1 < len(loc) else None
            if following is not None and following in node and not isinstance(node[part], (dict, list)):
                continue  # a tag that is also a key (transforms: `- limit: 10`), the error is about a sibling
            node, tags_seen = node[part], set()
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node, tags_seen = node[part], set()
            path.append(part)
    if keep_missing_key and loc and isinstance(loc[-1], str) and loc[-1] not in path and isinstance(node, dict):
        path.append(loc[-1])
    return tuple(path)


def _names_in(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _value_at(tree: Any, path: tuple) -> Any:
    node = tree
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _a(value: Any) -> str:
    """'a list [1, 2]', 'a mapping {...}', "the text 'abc'" for messages about a value of the wrong type."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return f"a mapping {_short(value)}"
    if isinstance(value, list):
        return f"a list {_short(value)}"
    if isinstance(value, str):
        return f"the text {_short(value)}"
    if value is None:
        return "null"
    return f"the number {value!r}" if isinstance(value, (int, float)) else _short(value)


# pydantic error type -> (what is expected, how to fix)
_TYPE_ERRORS = {
    "int_parsing": ("a whole number", "write digits without quotes, e.g. 8"),
    "int_type": ("a whole number", "write digits without quotes, e.g. 8"),
    "int_from_float": ("a whole number", "drop the fraction, e.g. 8"),
    "float_parsing": ("a number", "write a number without quotes, e.g. 0.5 or 2.0e-5"),
    "float_type": ("a number", "write a number without quotes, e.g. 0.5 or 2.0e-5"),
    "bool_parsing": ("true or false", "write true or false"),
    "bool_type": ("true or false", "write true or false"),
    "string_type": ("text", "quote the value to make it text"),
    "dict_type": ("a mapping", "write `key: value` lines (or `{key: value}`), not `- ` list items"),
    "model_type": ("a mapping", "write `key: value` lines (or `{key: value}`), not `- ` list items"),
    "model_attributes_type": ("a mapping", "write `key: value` lines (or `{key: value}`)"),
    "list_type": ("a list", "write `- item` lines or `[a, b]`"),
}

_BOUNDS = {"greater_than_equal": "at least", "greater_than": "greater than", "less_than_equal": "at most", "less_than": "less than"}
_BOUND_KEYS = {"greater_than_equal": "ge", "greater_than": "gt", "less_than_equal": "le", "less_than": "lt"}

_DISCRIMINATOR_CHOICES = {"kind": "recipe kind", "use": "step type", "method": "training method", "type": "adapter type"}


def _discriminator_values(disc: str, path: tuple) -> list[str]:
    from engine.recipe.models.data import DATA_SOURCES
    from engine.recipe.models.model_sources import MODEL_SOURCES
    from engine.recipe.models.recipe import KINDS
    from engine.recipe.models.steps import STEP_TYPES
    from engine.recipe.models.train import ADAPTER_TYPES, METHODS

    if disc == "source":
        return list(DATA_SOURCES if "sources" in path else MODEL_SOURCES)
    return list({"kind": KINDS, "use": STEP_TYPES, "method": METHODS, "type": ADAPTER_TYPES}.get(disc, ()))


def _split_message(msg: str) -> tuple[str, str, str]:
    """'what — why; fix' (as validators write their messages) -> (what, why, fix)."""
    what, _, rest = msg.partition(" — ")
    why, _, fix = rest.partition("; ")
    return what, why, fix


def pydantic_errors(exc: ValidationError, tree: dict, locate: Locate) -> list[RecipeError]:
    """Turn a ValidationError into recipe errors with what / why / fix and a location."""
    out: list[tuple[RecipeError, bool]] = []  # (error, raised by the reference member of a `Ref | block` union)
    expected_types: dict[int, str] = {}  # id(error) -> the type it expected, for errors saying "expected TYPE, got ..."

    def where_of(path: tuple) -> Optional[Location]:
        found = locate(path)
        if found is not None and not found.line and not found.file.startswith("<"):
            return Location(found.file, 1, 1)  # the top level of the file: point at its first line
        return found

    for e in exc.errors(include_url=False):
        kind, loc, ctx, value = e["type"], tuple(e["loc"]), e.get("ctx") or {}, e.get("input")
        path = _tree_path(tree, loc, keep_missing_key=kind == "missing")
        where = where_of(path)
        ref_member = "constrained-str" in loc or (kind == "string_pattern_mismatch" and ctx.get("pattern") == REF_PATTERN)

        def add(what: str, why: str = "", fix: str = "", at: tuple = path, location: Optional[Location] = where) -> None:
            out.append((RecipeError(what, at, why=why, fix=fix, location=location), ref_member))

        if kind == "extra_forbidden":
            key = path[-1] if path else loc[-1]
            block = model_at(Recipe, tree, path[:-1])
            allowed = field_names(block) if block else []
            hint = did_you_mean(str(key), allowed)
            listing = f"keys here: {', '.join(allowed)}" if len(allowed) <= 12 else "`recipe schema --reference` lists the keys of every block"
            add(f"unknown key '{key}'", why=f"{block.__name__ if block else 'this block'} has no key '{key}'",
                fix=hint or (f"remove it ({listing})" if allowed else "remove it"))
        elif kind == "missing":
            key = path[-1] if path else loc[-1]
            block = model_at(Recipe, tree, path[:-1])
            desc = ""
            if block is not None:
                for name, info in block.model_fields.items():
                    if key in (name, info.alias) and info.description:
                        text = info.description.rstrip(".")
                        desc = ": " + (text[0].lower() + text[1:] if text[1:2].islower() else text)
            add(f"missing required key '{key}'", why=f"{block.__name__ if block else 'this block'} needs it{desc}",
                fix=f"add `{key}:`", location=where or locate(path[:-1]))
        elif kind == "union_tag_invalid":
            disc, tag = ctx.get("discriminator", "").strip("'"), ctx.get("tag")
            expected = _names_in(ctx.get("expected_tags", ""))
            at = path + ((disc,) if disc and disc not in path[-1:] else ())
            noun = _DISCRIMINATOR_CHOICES.get(disc, "data source" if "sources" in path else "model source")
            actual = _value_at(tree, at)
            name = f"'{actual}'" if isinstance(actual, str) else _a(actual)
            add(f"unknown {disc} {name}", why=f"`{disc}:` names the {noun}", fix=choose_from(str(tag), expected),
                at=at, location=where_of(at) or where)
        elif kind == "union_tag_not_found":
            disc = ctx.get("discriminator", "").strip("'")
            choices = _discriminator_values(disc, path)
            noun = _DISCRIMINATOR_CHOICES.get(disc, "data source" if "sources" in path else "model source")
            add(f"missing `{disc}:`", why=f"`{disc}:` names the {noun}" + (f": {', '.join(choices)}" if choices else ""),
                fix=f"add e.g. `{disc}: {choices[0]}`" if choices else f"add `{disc}:`", at=path + (disc,))
        elif kind == "recipe_rule":
            add(ctx.get("what", e["msg"]), why=ctx.get("why", ""), fix=ctx.get("fix", ""))
        elif kind == "transform":
            keys = [str(k) for k in value] if isinstance(value, dict) else []
            expected = ctx.get("expected", "")
            known = [k for k in keys if k in expected.split(", ")]
            if len(keys) == 1:
                add(f"unknown transform '{keys[0]}'", why=f"a transform is a one-key mapping: {expected}",
                    fix=choose_from(keys[0], expected.split(", ")), at=path + (keys[0],), location=where_of(path + (keys[0],)))
            elif len(known) > 1:
                add(f"one transform item names {len(known)} transforms: {', '.join(known)}",
                    why="each `- ` item of `transforms:` is one transform, applied in order",
                    fix="write each transform as its own `- ` item")
            else:
                add(f"expected a transform, got {_a(value)}", why=f"a transform is a one-key mapping: {expected}",
                    fix="e.g. `- filter: \"answers | length > 0\"`")
        elif kind == "stage":
            add(f"expected a stage, got {_a(value)}", why=e["msg"], fix="add `use:`, `kind:` or `recipe:`")
        elif kind == "literal_error":
            expected = _names_in(ctx.get("expected", "")) or [str(ctx.get("expected", ""))]
            add(f"{_short(value)} is not allowed", why=f"expected {ctx.get('expected')}", fix=choose_from(str(value), expected))
        elif kind == "value_error":
            add(*_split_message(e["msg"].removeprefix("Value error, ")))
        elif kind == "string_pattern_mismatch" and ctx.get("pattern") == REF_PATTERN:
            if isinstance(value, str) and "${" in value and "}" not in value[value.index("${"):]:
                add(f"unclosed reference {_short(value)}", why="a reference ends with '}'", fix="add the closing '}'")
            else:
                add(f"expected a reference `${{...}}`, got {_short(value)}",
                    why="this field takes another step's or the data block's output",
                    fix="write e.g. `${data.train}` or `${steps.NAME.OUTPUT}`")
        elif kind in _BOUNDS:
            add(f"must be {_BOUNDS[kind]} {ctx.get(_BOUND_KEYS[kind])}, got {_short(value)}")
        elif kind in ("too_short", "too_long"):
            n = ctx.get("min_length" if kind == "too_short" else "max_length")
            add(f"needs {'at least' if kind == 'too_short' else 'at most'} {n} item{'s' if n != 1 else ''}, "
                f"got {ctx.get('actual_length', len(value) if hasattr(value, '__len__') else '?')}")
        elif kind in _TYPE_ERRORS:
            expected, fix = _TYPE_ERRORS[kind]
            add(f"expected {expected}, got {_a(value)}", fix=fix)
            expected_types[id(out[-1][0])] = expected
        else:
            msg = e["msg"][0].lower() + e["msg"][1:]
            add(f"{msg}, got {_short(value)}")
    return _merge_type_errors(_drop_union_noise(out, tree, expected_types), expected_types, tree)


def _drop_union_noise(errors: list[tuple[RecipeError, bool]], tree: dict, expected_types: dict[int, str]) -> list[RecipeError]:
    """A union reports an error per member; keep those of the member the value is written as.

    `Ref | block`: a string is a reference, a mapping the block. `int | Block` and the like: a type mismatch
    at a path is dropped when another member accepted the value and found problems inside it.
    """
    paths = {err.path for err, _ in errors}
    kept = []
    for err, ref_member in errors:
        is_text = isinstance(_value_at(tree, err.path), str)
        deeper = any(p[: len(err.path)] == err.path and p != err.path for p in paths)
        from_both = deeper or len({r for e, r in errors if e.path == err.path}) > 1
        if from_both and ref_member != is_text:
            continue
        if deeper and id(err) in expected_types:
            continue
        kept.append(err)
    return kept


def _merge_type_errors(errors: list[RecipeError], expected_types: dict[int, str], tree: dict) -> list[RecipeError]:
    """'expected a whole number, got ...' and 'expected a mapping, got ...' at one path (a union) -> one error."""
    by_path: dict[tuple, list[RecipeError]] = {}
    for err in errors:
        if id(err) in expected_types:
            by_path.setdefault(err.path, []).append(err)
    out = []
    for err in errors:
        group = by_path.get(err.path, [])
        if len(group) < 2 or id(err) not in expected_types:
            out.append(err)
        elif err is group[0]:
            kinds = list(dict.fromkeys(expected_types[id(e)] for e in group))
            err.what = f"expected {' or '.join(kinds)}, got {_a(_value_at(tree, err.path))}"
            err.fix = ""
            out.append(err)
    return out


def all_refs(text: str) -> list[str]:
    return [m.group(1) for m in REF_RE.finditer(text)]
