"""The `${...}` reference grammar: parsing, static type checking, dependency order and cycle detection.

    ${vars.X[.Y]}              a user parameter (substituted before validation; keeps its type)
    ${data.NAME[.NAME]}        a named data output                               -> Dataset
    ${steps.NAME.OUTPUT[.KEY]} an output of a step in this epoch / graph          -> the output's type (KEY: Metrics only)
    ${prev.steps.NAME.OUTPUT}  the same, from the previous loop epoch
    ${carry.NAME}              a loop-carried value                               -> the type of its init
    ${stages.NAME.OUTPUT}      a declared output of an earlier pipeline stage
    ${epoch}                   the loop epoch (int)
    ${model}                   the recipe's model                                 -> Model
    ${env:NAME}                an environment variable, read only at execution and never written anywhere
    a | b                      the first alternative that exists at execution
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, Optional

from engine.recipe.errors import did_you_mean
from engine.recipe.models.common import REF_RE, ArtifactType

A = ArtifactType
SCOPES = ("vars", "data", "steps", "prev", "carry", "stages", "epoch", "model", "env")
_NAME = r"[A-Za-z_][A-Za-z0-9_\-]*"
_ALT_RE = re.compile(rf"^(env:[A-Za-z_][A-Za-z0-9_]*|{_NAME}(\.{_NAME})*)$")


class ReferenceError_(ValueError):
    """A malformed or unresolvable reference: what is wrong, why, and how to fix it."""

    def __init__(self, what: str, why: str = "", fix: str = ""):
        self.what, self.why, self.fix = what, why, fix
        super().__init__(what + (f" — {why}" if why else "") + (f"; {fix}" if fix else ""))


def _pick(name: str, choices, listing: str) -> str:
    """A did-you-mean when a choice is close, else `listing` (what exists)."""
    return did_you_mean(name, choices) or listing


_GRAMMAR = ("a reference is a dotted name inside `${...}`: vars.X, data.NAME, steps.NAME.OUTPUT, prev.steps.NAME.OUTPUT, "
            "carry.NAME, stages.NAME.OUTPUT, epoch, model or env:NAME (alternatives joined by ' | ')")
_FIX_BY_TYPE = {
    "Dataset": "reference a Dataset, e.g. `${data.NAME}` or a step's `rows`",
    "Model": "reference a Model, e.g. `${model}`, `${carry.NAME}` or a train step's `model`",
    "Samples": "reference Samples: a collect or score step's `samples`",
    "Metrics": "reference Metrics: a step's `metrics`",
    "Endpoint": "reference an Endpoint: a serve step's `endpoint`",
}


@dataclass(frozen=True)
class Target:
    """One alternative of a reference: a scope and the dotted parts after it."""

    scope: str
    parts: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.scope == "env":
            return f"env:{self.parts[0]}"
        return ".".join((self.scope, *self.parts))

    @property
    def step(self) -> Optional[str]:
        """The step this target names (steps.X... or prev.steps.X...)."""
        if self.scope == "steps" and self.parts:
            return self.parts[0]
        if self.scope == "prev" and len(self.parts) >= 2:
            return self.parts[1]
        return None


@dataclass(frozen=True)
class Reference:
    text: str
    alternatives: tuple[Target, ...]


def parse(text: str) -> Reference:
    """Parse the inside of `${...}`."""
    alts = []
    for raw in text.split("|"):
        alt = raw.strip()
        if not alt or not _ALT_RE.match(alt):
            raise ReferenceError_(f"malformed reference '${{{text}}}'", _GRAMMAR, _malformed_fix(alt))
        if alt.startswith("env:"):
            alts.append(Target("env", (alt[4:],)))
            continue
        scope, *parts = alt.split(".")
        if scope not in SCOPES:
            raise ReferenceError_(f"unknown reference scope '{scope}' in '${{{text}}}'",
                                  f"a reference starts with one of {', '.join(SCOPES[:-1])} or env:NAME",
                                  _pick(scope, SCOPES, f"use one of {', '.join(SCOPES)}"))
        alts.append(Target(scope, tuple(parts)))
    return Reference(text, tuple(alts))


def _malformed_fix(alt: str) -> str:
    if not alt:
        return "write a name between the braces (or both sides of '|'), e.g. `${data.train}`"
    if ".." in alt or alt.startswith(".") or alt.endswith("."):
        return "remove the empty part between the dots, e.g. `${steps.NAME.OUTPUT}`"
    return "names are letters, digits, '_' and '-', joined by '.', e.g. `${steps.train.model}`"


def unclosed(text: str) -> list[ReferenceError_]:
    """A `${` that does not start a complete `${...}` (unclosed, empty or with braces inside)."""
    covered = {m.start() for m in REF_RE.finditer(text)}
    problems = []
    for m in re.finditer(r"\$\{", text):
        if m.start() in covered:
            continue
        rest = text[m.start():]
        if rest.startswith("${}"):
            problems.append(ReferenceError_("empty reference '${}'", _GRAMMAR, "write a name between the braces, e.g. `${data.train}`"))
        elif "}" not in rest:
            problems.append(ReferenceError_(f"unclosed reference '{rest}'", "a reference ends with '}'", "add the closing '}'"))
        else:
            problems.append(ReferenceError_(f"malformed reference '{rest[:rest.index('}') + 1]}'", _GRAMMAR,
                                            "a reference holds no '{' or '}' inside, e.g. `${steps.train.model}`"))
    return problems


def find(text: str) -> Iterator[tuple[str, bool]]:
    """Every `${...}` inside a string: (inner text, is the whole value)."""
    whole = REF_RE.fullmatch(text.strip()) is not None
    for m in REF_RE.finditer(text):
        yield m.group(1), whole


@dataclass
class Scope:
    """What references may name at one place of a recipe."""

    data: set[str] = field(default_factory=set)
    has_model: bool = False
    steps: dict[str, dict[str, ArtifactType]] = field(default_factory=dict)
    in_loop: bool = False
    carry: dict[str, ArtifactType] = field(default_factory=dict)
    stages: dict[str, dict[str, ArtifactType]] = field(default_factory=dict)
    later_stages: set[str] = field(default_factory=set)
    vars: set[str] = field(default_factory=set)


def target_type(t: Target, scope: Scope) -> ArtifactType:
    """The artifact type a target names, or ReferenceError_ explaining why it doesn't exist."""
    s, p = t.scope, t.parts
    E = ReferenceError_
    if s == "env":
        return A.value
    if s == "vars":  # substituted before validation, which reports unknown names
        return A.value
    if s == "epoch":
        if p:
            raise E(f"`${{{t}}}`: `${{epoch}}` has no fields", "the epoch is a number", "write `${epoch}`")
        if not scope.in_loop:
            raise E("`${epoch}` exists only inside a loop", "only `kind: loop` recipes have epochs",
                    "remove it here, or make this a loop")
        return A.value
    if s == "model":
        if p:
            raise E(f"`${{{t}}}`: `${{model}}` has no fields", "it names the recipe's `model:` block as a whole",
                    "write `${model}`")
        if not scope.has_model:
            raise E("`${model}` is used but the recipe has no top-level `model:`", "`${model}` names the recipe's `model:` block",
                    "add a `model:` block, or write the model here")
        return A.model
    if s == "data":
        name = ".".join(p)
        if name not in scope.data:
            known = ", ".join(sorted(scope.data))
            raise E(f"no data output 'data.{name}'", "`data.NAME` names a source, split or mix of the `data:` block",
                    _pick(name, scope.data, f"data outputs are: {known}" if known else "add a `data:` block with `sources:`"))
        return A.dataset
    if s == "carry":
        if not scope.in_loop:
            raise E("`${carry...}` exists only inside a loop", "carried values pass from one loop epoch to the next",
                    "use it in a `kind: loop` recipe, or reference the value itself")
        name = p[0] if p else ""
        if len(p) != 1 or name not in scope.carry:
            raise E(f"no carried value 'carry.{'.'.join(p)}'", "`carry.NAME` names a value declared under `loop.carry`",
                    _pick(name, scope.carry, f"declare `{name or 'NAME'}: {{init: ..., next: ...}}` under `loop.carry`"))
        return scope.carry[name]
    if s == "prev":
        if not scope.in_loop:
            raise E("`${prev...}` exists only inside a loop (the previous epoch)", "only `kind: loop` recipes have epochs",
                    "use `${steps.NAME.OUTPUT}` for a step of this recipe")
        if not p or p[0] != "steps":
            raise E(f"malformed reference `${{{t}}}`", "`prev` holds the previous epoch's step outputs",
                    "write `${prev.steps.NAME.OUTPUT}`")
        return _step_output(p[1:], scope, "prev.steps")
    if s == "steps":
        return _step_output(p, scope, "steps")
    if s == "stages":
        if len(p) < 2:
            raise E(f"malformed reference `${{{t}}}`", "a stage is referenced by one of its declared outputs",
                    "write `${stages.NAME.OUTPUT}`")
        name, out = p[0], p[1]
        if name in scope.later_stages:
            raise E(f"stage '{name}' runs later", "a stage may only use outputs of earlier stages",
                    f"move stage '{name}' before this one, or use an earlier stage's output")
        if name not in scope.stages:
            earlier = ", ".join(scope.stages)
            raise E(f"no stage '{name}'", "`stages.NAME` names an earlier stage of this pipeline",
                    _pick(name, scope.stages, f"earlier stages: {earlier}" if earlier else "there are no earlier stages"))
        outs = scope.stages[name]
        if out not in outs:
            raise E(f"stage '{name}' declares no output '{out}'", "other stages see only a stage's `outputs:`",
                    _pick(out, outs, f"its outputs: {', '.join(outs)}" if outs else f"declare `outputs:` in stage '{name}'"))
        return _subfield(outs[out], p[2:], f"stages.{name}.{out}")
    raise E(f"unknown scope '{s}'", _GRAMMAR)


def _step_output(p: tuple[str, ...], scope: Scope, prefix: str) -> ArtifactType:
    if len(p) < 2:
        raise ReferenceError_(f"malformed reference `${{{prefix}.{'.'.join(p)}}}`", "a step is referenced by one of its outputs",
                              f"write `${{{prefix}.NAME.OUTPUT}}`")
    name, out = p[0], p[1]
    if name not in scope.steps:
        steps = ", ".join(scope.steps)
        raise ReferenceError_(f"no step '{name}'", "`steps.NAME` names a step of this recipe" if prefix == "steps"
                              else "`prev.steps.NAME` names a step of this loop",
                              _pick(name, scope.steps, f"steps: {steps}" if steps else "there are no steps"))
    outs = scope.steps[name]
    if out not in outs:
        raise ReferenceError_(f"step '{name}' has no output '{out}'", f"its outputs are: {', '.join(outs)}",
                              _pick(out, outs, f"use one of them, e.g. `${{{prefix}.{name}.{next(iter(outs), 'OUTPUT')}}}`"))
    return _subfield(outs[out], p[2:], f"{prefix}.{name}.{out}")


def _subfield(tp: ArtifactType, rest: tuple[str, ...], where: str) -> ArtifactType:
    if not rest:
        return tp
    if tp != A.metrics:
        raise ReferenceError_(f"'{where}.{'.'.join(rest)}': '{where}' is a {tp.value}, which has no fields",
                              "only Metrics have fields (one metric value each, e.g. `${steps.NAME.metrics.accuracy}`)",
                              f"write `${{{where}}}`")
    return A.value


def check(text: str, scope: Scope, expected: Optional[ArtifactType | tuple]) -> tuple[list[Target], list[ReferenceError_]]:
    """Check every reference in one string value. Returns (targets, problems).

    `expected` is the type the field takes, or a tuple of types it accepts (the first one names it in messages)."""
    accepted = tuple(expected) if isinstance(expected, tuple) else (expected,)
    expected = accepted[0]
    targets: list[Target] = []
    problems: list[ReferenceError_] = unclosed(text)
    for inner, whole in find(text):
        try:
            ref = parse(inner)
        except ReferenceError_ as exc:
            problems.append(exc)
            continue
        types = []
        for alt in ref.alternatives:
            targets.append(alt)
            try:
                types.append(target_type(alt, scope))
            except ReferenceError_ as exc:
                problems.append(exc)
        if not types:
            continue
        if whole and expected is not None and expected != A.value:
            wrong = [t for t in types if t not in (*accepted, A.value)]
            if wrong:
                names = " or ".join(t.value for t in accepted)
                problems.append(ReferenceError_(
                    f"'${{{inner}}}' is a {wrong[0].value}, but a {names} is expected here",
                    f"this field takes a {names}", _FIX_BY_TYPE.get(expected.value, "")))
        if not whole and any(t not in (A.value,) for t in types):
            kinds = sorted({t.value for t in types if t != A.value})
            problems.append(ReferenceError_(
                f"'${{{inner}}}' is a {kinds[0]} and cannot be written inside text",
                "only plain values (vars, epoch, env, metric values) can be part of a string",
                f"use it as the whole value: \"${{{inner}}}\""))
    return targets, problems


def order_steps(deps: dict[str, set[str]]) -> tuple[list[str], Optional[list[str]]]:
    """Topological order stable by declaration; returns (order, cycle or None)."""
    names = list(deps)
    state: dict[str, int] = {}
    order: list[str] = []
    stack: list[str] = []

    def visit(n: str) -> Optional[list[str]]:
        state[n] = 1
        stack.append(n)
        for d in sorted((d for d in deps.get(n, ()) if d in deps), key=names.index):  # unknown steps are reported elsewhere
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                cyc = visit(d)
                if cyc:
                    return cyc
        stack.pop()
        state[n] = 2
        order.append(n)
        return None

    for n in names:
        if n not in state:
            cyc = visit(n)
            if cyc:
                return [], cyc
    return order, None
