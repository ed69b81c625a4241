"""Semantic checks after the models validated: references, names in registries, templates, expressions, files, trust."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional

from engine import catalog
from engine.recipe import references as refs
from engine.recipe.errors import ErrorCollector, Location, RecipeErrors, choose_from, did_you_mean, display_path
from engine.recipe.models.common import ArtifactType, scorer_names
from engine.recipe.models.data import FileSource, FunctionTransform
from engine.recipe.models.model_sources import GGUFModel, LocalModel
from engine.recipe.models.recipe import (EvalRecipe, InlineEval, InlineLoop, InlineTrain, LoopRecipe, PipelineRecipe,
                                         RecipeStage, TrainRecipe)
from engine.recipe.models.steps import Evaluate, Suite
from engine.recipe.models.train import GRPO

A = ArtifactType


def iter_blocks(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every pydantic block in a validated recipe, with its key path."""
    from pydantic import BaseModel

    if isinstance(node, BaseModel):
        yield path, node
        for name, info in type(node).model_fields.items():
            value = getattr(node, name)
            if value is not None:
                yield from iter_blocks(value, path + (info.alias or name,))
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from iter_blocks(v, path + (k,))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from iter_blocks(v, path + (i,))


def iter_strings(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from iter_strings(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from iter_strings(v, path + (i,))
    elif isinstance(node, str):
        yield path, node


def check_recipe(v, errors: ErrorCollector, *, check_files: bool, stack: tuple,
                 outer_stages: Optional[dict] = None) -> None:
    locate = v.loaded.location
    recipe = v.recipe
    _check_names(recipe, errors, locate)
    _check_expressions(recipe, errors, locate)
    if check_files:
        _check_files(recipe, errors, locate)
    v.trust = _trust(recipe)
    _ReferenceChecker(v, errors, stack, outer_stages).run()


# --- names ---------------------------------------------------------------------------------------------


def _check_names(recipe: Any, errors: ErrorCollector, locate) -> None:
    from engine.data.templates import list_templates

    templates = set(list_templates())
    suites = {name for _, block in iter_blocks(recipe) for name in (getattr(block, "suites", None) or {})}
    for path, block in iter_blocks(recipe):
        suite = getattr(block, "suite", None)
        if isinstance(block, Evaluate) and isinstance(suite, str) and suite not in suites:
            errors.add(f"unknown suite '{suite}'", path + ("suite",), why="`suite:` names a suite of the recipe's `suites:` block",
                       fix=choose_from(suite, suites) if suites else "define it under `suites:` (name: {tasks: ...})",
                       location=locate(path + ("suite",)))
        for index, name in enumerate(getattr(block, "include", None) or []) if isinstance(block, Suite) else ():
            if name not in suites:
                errors.add(f"unknown suite '{name}'", path + ("include", index), why="a suite includes other suites of `suites:`",
                           fix=choose_from(name, suites - {path[-1]}) if len(suites) > 1 else "remove it",
                           location=locate(path + ("include", index)))
        scorer = getattr(block, "scorer", None)
        if scorer is not None and not isinstance(block, str):
            for name in scorer_names(scorer):
                if name not in catalog.SCORERS:
                    errors.add(f"unknown scorer '{name}'", path + ("scorer",), why="scorers are registered by name",
                               fix=choose_from(name, catalog.SCORERS.names()), location=locate(path + ("scorer",)))
        adapter = getattr(block, "adapter", None)
        if isinstance(adapter, str) and hasattr(block, "transforms") and adapter not in catalog.ADAPTERS:
            errors.add(f"unknown dataset adapter '{adapter}'", path + ("adapter",), why="adapters are registered by name",
                       fix=choose_from(adapter, catalog.ADAPTERS.names()), location=locate(path + ("adapter",)))
        template = getattr(block, "template", None)
        builtin = {"judge/rubric"}  # the LLM judge's built-in rubric (engine/score/judge.py), the Judge default
        if isinstance(template, str) and not template.endswith((".yaml", ".yml")) and template not in templates | builtin:
            errors.add(f"unknown template '{template}'", path + ("template",), why="named templates ship in templates/",
                       fix=choose_from(template, templates), location=locate(path + ("template",)))


def _check_expressions(recipe: Any, errors: ErrorCollector, locate) -> None:
    from engine.recipe.expressions import check_expression

    for path, block in iter_blocks(recipe):
        for key in ("when", "where", "filter"):
            expr = getattr(block, key, None)
            if isinstance(expr, str):
                problem = check_expression(expr)
                if problem:
                    example = "when: \"{{ vars.adapter == 'lora' }}\"" if key == "when" else f"{key}: \"judgment != judgment_label\""
                    errors.add(f"invalid expression in `{key}`: {problem}", path + (key,),
                               why="`when:` is a Jinja2 expression over vars and epoch" if key == "when"
                               else f"`{key}:` is a Jinja2 expression over the fields of a row",
                               fix=f"fix the syntax, e.g. `{example}`", location=locate(path + (key,)))


def _base_dir(location: Optional[Location]) -> Path:
    if location and not location.file.startswith("<"):
        return Path(location.file).resolve().parent
    return Path.cwd()


def resolve_local(path_text: str, location: Optional[Location]) -> Path:
    """A recipe path: absolute, or relative to the file that wrote it (cwd for --set)."""
    p = Path(path_text).expanduser()
    return p if p.is_absolute() else _base_dir(location) / p


def _check_files(recipe: Any, errors: ErrorCollector, locate) -> None:
    for path, block in iter_blocks(recipe):
        if isinstance(block, (FileSource, LocalModel)) or (isinstance(block, GGUFModel) and not block.file.startswith("package:")):
            key = "file" if isinstance(block, GGUFModel) else "path"
            text = getattr(block, key)
            if "${" in text:
                continue
            loc = locate(path + (key,))
            target = resolve_local(text, loc)
            if not target.exists():
                noun = "model directory" if isinstance(block, LocalModel) else "data file" if isinstance(block, FileSource) else "file"
                hint = _nearby(target, text)
                relative = "relative to the recipe file that writes it" if loc and not loc.file.startswith("<") else "relative to the current directory"
                errors.add(f"{noun} not found: '{text}'", path + (key,), why=f"there is nothing at {display_path(str(target))}",
                           fix=f"{hint + ' ' if hint else ''}check the path ({relative})", location=loc)


def _nearby(target: Path, written: str) -> str:
    """'did you mean X?' over the names beside a missing file (X written as the recipe would), or ''."""
    if not target.parent.is_dir():
        return ""
    import difflib

    match = difflib.get_close_matches(target.name, [p.name for p in target.parent.iterdir()], n=1, cutoff=0.6)
    return f"did you mean '{(Path(written).parent / match[0]).as_posix()}'?" if match else ""


def _trust(recipe: Any) -> list[str]:
    """Options that run arbitrary code, listed by `recipe validate`."""
    from engine.recipe.errors import format_path

    out = []
    for path, block in iter_blocks(recipe):
        if getattr(block, "trust_remote_code", False):
            out.append(f"{format_path(path)}.trust_remote_code: runs the model repository's Python code")
        if isinstance(block, FunctionTransform):
            out.append(f"{format_path(path)}.function: runs {block.function}")
        if isinstance(block, GRPO):
            out.extend(f"{format_path(path)}.reward_code: runs {fn}" for fn in block.reward_code)
        scorer = getattr(block, "scorer", None)
        if scorer is not None and "code_exec" in scorer_names(scorer):
            out.append(f"{format_path(path)}.scorer: executes generated code (sandboxed: own process group, limits, no network)")
    return out


# --- references ----------------------------------------------------------------------------------------


class _ReferenceChecker:
    """Builds the scope of each part of the recipe and checks every `${...}` in it."""

    def __init__(self, v, errors: ErrorCollector, stack: tuple, outer_stages: Optional[dict] = None):
        self.v, self.errors, self.stack = v, errors, stack
        self.outer_stages = dict(outer_stages or {})  # a file stage sees the earlier stages of its pipeline
        self.locate = v.loaded.location

    def run(self) -> None:
        r = self.v.recipe
        base = self._base_scope(r)
        base.stages = dict(self.outer_stages)
        outputs_scope = base
        if isinstance(r, (TrainRecipe, EvalRecipe, LoopRecipe)):
            outputs_scope = self._graph(r, base, ())
        elif isinstance(r, PipelineRecipe):
            outputs_scope = self._pipeline(r, base)
        self._strings(self.v.tree.get("outputs") or {}, ("outputs",), outputs_scope, None)
        for key in ("model", "data", "suites", "launch", "output", "tracking"):  # blocks outside the step graph
            self._strings(self.v.tree.get(key) or {}, (key,), self._base_scope(r), None)

    def _base_scope(self, r, parent: Optional[refs.Scope] = None) -> refs.Scope:
        data = set(r.data.output_names()) if r.data else (set(parent.data) if parent else set())
        has_model = r.model is not None or bool(parent and parent.has_model)
        variables = set(r.vars) | (parent.vars if parent else set())
        return refs.Scope(data=data, has_model=has_model, vars=variables)

    def _strings(self, node: Any, path: tuple, scope: refs.Scope, expected_of, deps: Optional[set] = None) -> None:
        for sub, text in iter_strings(node, ()):
            if "${" not in text:
                continue
            expected = expected_of(sub) if expected_of else None
            targets, problems = refs.check(text, scope, expected)
            for p in problems:
                self.errors.add(p.what, path + sub, why=p.why, fix=p.fix, location=self.locate(path + sub))
            if deps is not None:
                deps.update(t.parts[0] for t in targets if t.scope == "steps" and t.parts)

    def _graph(self, r, scope: refs.Scope, prefix: tuple) -> refs.Scope:
        """A train / eval / loop recipe (or inline stage): its steps in one scope."""
        tree = _subtree(self.v.tree, prefix)
        if isinstance(r, (TrainRecipe, InlineTrain)):
            steps, steps_path = {"train": r.train}, prefix + ("train",)
            step_tree = {"train": tree.get("train", {})}
        elif isinstance(r, (EvalRecipe, InlineEval)):
            steps, steps_path = {"evaluate": r.evaluate}, prefix + ("evaluate",)
            step_tree = {"evaluate": tree.get("evaluate", {})}
        else:
            steps, steps_path = r.loop.steps, prefix + ("loop", "steps")
            step_tree = tree.get("loop", {}).get("steps", {})
        scope.steps = {name: step.outputs() for name, step in steps.items()}
        if isinstance(r, (LoopRecipe, InlineLoop)):
            scope.in_loop = True
            self._carry(r, scope, prefix)
        deps: dict[str, set[str]] = {}
        for name, step in steps.items():
            where = steps_path if len(steps) == 1 and not isinstance(r, (LoopRecipe, InlineLoop)) else steps_path + (name,)
            types = step.reference_types()
            deps[name] = set()
            self._strings(step_tree.get(name, {}), where, scope, lambda sub, t=types: t.get(".".join(map(str, sub))), deps[name])
        _, cycle = refs.order_steps(deps)
        if cycle:
            self.errors.add("reference cycle: " + " -> ".join(cycle), steps_path + (cycle[0],),
                            why="a step cannot depend on itself through other steps",
                            fix="break the cycle, e.g. with `${prev.steps...}` for the previous epoch",
                            location=self.locate(steps_path + (cycle[0],)))
        if isinstance(r, (LoopRecipe, InlineLoop)):
            loop_tree = tree.get("loop", {})
            self._baseline(r, loop_tree, prefix + ("loop",))
            if r.loop.summary:
                self._strings(loop_tree.get("summary", {}).get("columns", {}), prefix + ("loop", "summary", "columns"),
                              scope, lambda sub: A.value)
        return scope

    def _carry(self, r, scope: refs.Scope, prefix: tuple) -> None:
        carry_tree = _subtree(self.v.tree, prefix + ("loop", "carry"))
        outer = refs.Scope(data=scope.data, has_model=scope.has_model, stages=scope.stages, vars=scope.vars)
        for name, c in r.loop.carry.items():
            path = prefix + ("loop", "carry", name)
            targets, problems = refs.check(c.init, outer, None)
            for p in problems:
                self.errors.add(p.what, path + ("init",), why=p.why + " (`init` is read before the first epoch)", fix=p.fix,
                                location=self.locate(path + ("init",)))
            types = [refs.target_type(t, outer) for t in targets if not problems]
            scope.carry[name] = types[0] if types else A.value
        for name, c in r.loop.carry.items():
            path = prefix + ("loop", "carry", name, "next")
            self._strings(carry_tree.get(name, {}).get("next", ""), path, scope, lambda sub, n=name: scope.carry[n])

    def _baseline(self, r, loop_tree: dict, path: tuple) -> None:
        names = set(r.loop.steps)
        skipped = set(r.loop.baseline.skip) if r.loop.baseline else set()
        for i, name in enumerate(sorted(skipped)):
            if name not in names:
                idx = r.loop.baseline.skip.index(name)
                self.errors.add(f"baseline skips unknown step '{name}'", path + ("baseline", "skip", idx),
                                fix=choose_from(name, names), location=self.locate(path + ("baseline", "skip", idx)))
        first_has_prev = r.loop.baseline is not None
        for step_name, step_tree in (loop_tree.get("steps") or {}).items():
            if step_name in skipped:
                continue
            for sub, text in iter_strings(step_tree, ()):
                for inner, _ in refs.find(text):
                    try:
                        ref = refs.parse(inner)
                    except refs.ReferenceError_:
                        continue
                    first = ref.alternatives[0]
                    if len(ref.alternatives) > 1:
                        continue
                    problem = None
                    if first.step in skipped and first.scope == "steps":
                        problem = f"step '{first.step}' is skipped in the baseline epoch, so '${{{inner}}}' does not exist there"
                    elif first.scope == "prev" and not first_has_prev:
                        problem = f"'${{{inner}}}' does not exist in the first epoch (there is no baseline epoch 0)"
                    if problem:
                        where = path + ("steps", step_name) + sub
                        self.errors.add(problem, where, why="a step must get a value in every epoch it runs",
                                        fix=f"give a fallback, e.g. `${{{inner} | carry.NAME}}`, or skip this step too",
                                        location=self.locate(where))

    def _pipeline(self, r: PipelineRecipe, base: refs.Scope) -> refs.Scope:
        stages: dict[str, dict[str, ArtifactType]] = {}
        names = list(r.stages)
        for i, (name, stage) in enumerate(r.stages.items()):
            path = ("stages", name)
            scope = refs.Scope(data=base.data, has_model=base.has_model, vars=base.vars, stages=dict(stages),
                               later_stages=set(names[i:]))
            if isinstance(stage, RecipeStage):
                stages[name] = self._file_stage(name, stage, path, scope.stages)
            elif isinstance(stage, (InlineTrain, InlineEval, InlineLoop)):
                inner = self._base_scope(stage, scope)
                inner.stages, inner.later_stages = scope.stages, scope.later_stages
                inner = self._graph(stage, inner, path)
                out_tree = _subtree(self.v.tree, path + ("outputs",))
                self._strings(out_tree, path + ("outputs",), inner, None)
                stages[name] = {k: self._value_type(val, inner) for k, val in stage.outputs.items()}
            else:
                types = stage.reference_types()
                self._strings(_subtree(self.v.tree, path), path, scope, lambda sub, t=types: t.get(".".join(map(str, sub))))
                stages[name] = stage.outputs()
        return refs.Scope(data=base.data, has_model=base.has_model, vars=base.vars, stages=stages)

    def _value_type(self, text: str, scope: refs.Scope) -> ArtifactType:
        targets, problems = refs.check(text, scope, None)
        if problems or not targets:
            return A.value
        try:
            return refs.target_type(targets[0], scope)
        except refs.ReferenceError_:
            return A.value

    def _file_stage(self, name: str, stage: RecipeStage, path: tuple,
                    earlier: dict[str, dict[str, ArtifactType]]) -> dict[str, ArtifactType]:
        """A `recipe: FILE` stage, validated on its own with its `set:`/`profile:`; references to the pipeline's
        earlier stages (`set: {evaluate.model: ${stages.train.model}}`) are checked against those stages."""
        from engine.recipe.loader import list_shipped_recipes, load_recipe, resolve_recipe_path
        from engine.recipe.validate import validate

        loc = self.locate(path + ("recipe",))
        candidate = resolve_local(stage.recipe, loc)
        try:
            target = candidate if candidate.exists() else resolve_recipe_path(stage.recipe)
        except RecipeErrors:
            names = list_shipped_recipes()
            self.errors.add(f"stage recipe not found: '{stage.recipe}'", path + ("recipe",),
                            why=f"there is no file at {display_path(str(candidate))}, and no shipped recipe of that name",
                            fix=(did_you_mean(stage.recipe, names) + " " if did_you_mean(stage.recipe, names) else "")
                            + "file paths are relative to the recipe file that writes them (`recipe list recipes` names the shipped ones)",
                            location=loc)
            return {}
        try:
            if target.resolve() in self.stack or target.resolve() == self.v.loaded.path.resolve():
                chain = " -> ".join(p.name for p in (*self.stack, self.v.loaded.path, target))
                self.errors.add(f"recipe stage cycle: {chain}", path + ("recipe",), fix="a recipe cannot run itself as a stage", location=loc)
                return {}
            sets = [f"{k}={json.dumps(val)}" for k, val in stage.set.items()]
            sub = validate(load_recipe(target, profiles=stage.profile, sets=sets),
                           _stack=self.stack + (self.v.loaded.path.resolve(),), _stages=earlier)
        except RecipeErrors as exc:
            for err in exc.errors:
                if err.location is not None and not err.location.file.startswith("<"):
                    self.errors.extend([err])  # a problem inside the stage's file, at its own file:line:col
                else:  # from the stage's `set:` or `profile:`: point at that key of the stage
                    at = path + ("recipe",)
                    origin = err.location.file if err.location else ""
                    if origin.startswith("<--set "):
                        key = origin.removeprefix("<--set ").partition("=")[0]
                        at = path + ("set", key) if key in stage.set else at
                    elif stage.profile:
                        at = path + ("profile",)
                    self.errors.add(f"in stage '{name}': {err.what}", at, why=err.why, fix=err.fix, location=self.locate(at) or loc)
            return {}
        self.v.stage_recipes[name] = sub
        return declared_outputs(sub)


def declared_outputs(v) -> dict[str, ArtifactType]:
    """The types of a validated recipe's `outputs:`."""
    r = v.recipe
    scope = refs.Scope(data=set(r.data.output_names()) if r.data else set(), has_model=r.model is not None, vars=set(r.vars))
    if isinstance(r, (TrainRecipe, EvalRecipe)):
        step = r.train if isinstance(r, TrainRecipe) else r.evaluate
        scope.steps = {"train" if isinstance(r, TrainRecipe) else "evaluate": step.outputs()}
    elif isinstance(r, LoopRecipe):
        scope.steps = {n: s.outputs() for n, s in r.loop.steps.items()}
        scope.in_loop = True
        scope.carry = {n: A.model for n in r.loop.carry}
    out = {}
    for k, text in r.outputs.items():
        targets, problems = refs.check(text, scope, None)
        out[k] = A.value
        if targets and not problems:
            try:
                out[k] = refs.target_type(targets[0], scope)
            except refs.ReferenceError_:
                pass
    return out


def _subtree(tree: Any, path: tuple) -> Any:
    node = tree
    for p in path:
        if isinstance(node, dict):
            node = node.get(p, {})
        elif isinstance(node, list) and isinstance(p, int) and p < len(node):
            node = node[p]
        else:
            return {}
    return node
