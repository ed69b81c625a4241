"""Validation: substitute `${vars.*}`, validate with the Pydantic models, then the semantic checks.

Every problem is collected and raised at once as `RecipeErrors`, each with file:line:col and a fix.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from pydantic import TypeAdapter, ValidationError

from engine.recipe.errors import ErrorCollector, Location, RecipeError, RecipeErrors, choose_from, did_you_mean
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


def validate(loaded: LoadedRecipe, *, check_files: bool = True, _stack: tuple = ()) -> ValidatedRecipe:
    """Validate a loaded recipe; raise RecipeErrors with every problem found."""
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
        errors.extend(e for e in pydantic_errors(exc, tree, loaded.location) if e.path not in unresolved)
    if recipe is None:
        errors.raise_if_any()
        raise AssertionError("unreachable")
    validated = ValidatedRecipe(loaded=loaded, tree=tree, recipe=recipe)
    from engine.recipe.checks import check_recipe  # local: checks imports templates and expressions

    check_recipe(validated, errors, check_files=check_files, stack=_stack)
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
    """Replace `${vars.X}` everywhere but in `vars:` itself; a whole-value reference keeps the value's type."""
    variables = tree.get("vars") or {}
    if not isinstance(variables, dict):
        return tree

    def sub(node: Any, path: tuple) -> Any:
        if isinstance(node, dict):
            return {k: (v if path == () and k == "vars" else sub(v, path + (k,))) for k, v in node.items()}
        if isinstance(node, list):
            return [sub(v, path + (i,)) for i, v in enumerate(node)]
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

    return sub(tree, ())


# --- pydantic errors -> recipe errors ------------------------------------------------------------------


def _tree_path(tree: Any, loc: tuple) -> tuple:
    """Map a pydantic error location to a key path of the tree, dropping union tags and validator labels."""
    path: list = []
    node = tree
    tags_seen: set = set()
    for part in loc:
        tags = {node.get(k) for k in _DISCRIMINATORS} if isinstance(node, dict) else set()
        if isinstance(part, str) and part in tags and part not in tags_seen:
            tags_seen.add(part)  # the tag of a discriminated union, not a key
            continue
        if isinstance(node, dict) and part in node:
            node, tags_seen = node[part], set()
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node, tags_seen = node[part], set()
            path.append(part)
    # `missing` errors name a key that is not in the tree: keep it as the last element
    if loc and loc[-1] not in path and isinstance(loc[-1], str) and isinstance(node, dict):
        path.append(loc[-1])
    return tuple(path)


def _names_in(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def pydantic_errors(exc: ValidationError, tree: dict, locate: Locate) -> list[RecipeError]:
    """Turn a ValidationError into recipe errors with what / why / fix and a location."""
    out: list[RecipeError] = []
    for e in exc.errors(include_url=False):
        kind, loc, ctx, value = e["type"], tuple(e["loc"]), e.get("ctx") or {}, e.get("input")
        path = _tree_path(tree, loc)
        where = locate(path)
        if kind == "extra_forbidden":
            key = path[-1] if path else loc[-1]
            block = model_at(Recipe, tree, path[:-1])
            allowed = field_names(block) if block else []
            hint = did_you_mean(str(key), allowed)
            listing = f"keys here: {', '.join(allowed)}" if len(allowed) <= 12 else "`recipe schema` lists the keys of every block"
            fix = hint or (f"remove it ({listing})" if allowed else "remove it")
            out.append(RecipeError(f"unknown key '{key}'", path, why="this block does not have it", fix=fix, location=where))
        elif kind == "missing":
            key = path[-1] if path else loc[-1]
            block = model_at(Recipe, tree, path[:-1])
            desc = ""
            if block is not None:
                for name, info in block.model_fields.items():
                    if key in (name, info.alias) and info.description:
                        desc = f" ({info.description})"
            out.append(RecipeError(f"missing required key '{key}'", path, why=f"this block needs it{desc}",
                                   fix=f"add `{key}:`", location=where or locate(path[:-1])))
        elif kind == "union_tag_invalid":
            disc, tag = ctx.get("discriminator", "").strip("'"), ctx.get("tag")
            expected = _names_in(ctx.get("expected_tags", ""))
            out.append(RecipeError(f"unknown {disc} '{tag}'", path + ((disc,) if disc and disc not in path[-1:] else ()),
                                   why=f"`{disc}` selects the kind of block", fix=choose_from(str(tag), expected),
                                   location=locate(path + (disc,)) or where))
        elif kind == "union_tag_not_found":
            disc = ctx.get("discriminator", "").strip("'")
            out.append(RecipeError(f"missing key '{disc}'", path, why=f"`{disc}` selects the kind of block",
                                   fix=f"add `{disc}:`", location=where))
        elif kind == "recipe_rule":
            out.append(RecipeError(ctx.get("what", e["msg"]), path, why=ctx.get("why", ""), fix=ctx.get("fix", ""), location=where))
        elif kind in ("transform", "stage"):
            out.append(RecipeError(e["msg"], path, why=f"got {_short(value)}", location=where))
        elif kind == "literal_error":
            expected = _names_in(ctx.get("expected", "")) or [str(ctx.get("expected", ""))]
            out.append(RecipeError(f"{_short(value)} is not allowed", path, why=f"expected {ctx.get('expected')}",
                                   fix=choose_from(str(value), expected), location=where))
        elif kind == "value_error":
            msg = e["msg"].removeprefix("Value error, ")
            what, _, fix = msg.partition(" — ")
            out.append(RecipeError(what, path, fix=fix, location=where))
        elif kind == "string_pattern_mismatch" and ctx.get("pattern") == REF_PATTERN:
            out.append(RecipeError(f"expected a reference `${{...}}`, got {_short(value)}", path,
                                   why="this field takes another step's or the data block's output",
                                   fix="write e.g. `${data.train}` or `${steps.NAME.OUTPUT}`", location=where))
        else:
            msg = e["msg"][0].lower() + e["msg"][1:]
            out.append(RecipeError(f"{msg}, got {_short(value)}", path, location=where))
    return _drop_union_noise(out)


def _drop_union_noise(errors: list[RecipeError]) -> list[RecipeError]:
    """A value that may be a reference or a block yields one error per member; keep the block's errors."""
    by_path: dict[tuple, list[RecipeError]] = {}
    for err in errors:
        by_path.setdefault(err.path, []).append(err)
    kept = []
    for path, errs in by_path.items():
        refs = [e for e in errs if e.what.startswith("expected a reference")]
        deeper = any(p[: len(path)] == path and len(p) > len(path) for p in by_path)
        if refs and (deeper or len(errs) > len(refs)):
            errs = [e for e in errs if e not in refs]
        kept.extend(errs)
    return kept


def all_refs(text: str) -> list[str]:
    return [m.group(1) for m in REF_RE.finditer(text)]
