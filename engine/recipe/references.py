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
    """A malformed or unresolvable reference; the message says what and how to fix."""


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
            raise ReferenceError_(f"malformed reference '${{{text}}}'")
        if alt.startswith("env:"):
            alts.append(Target("env", (alt[4:],)))
            continue
        scope, *parts = alt.split(".")
        if scope not in SCOPES:
            hint = did_you_mean(scope, SCOPES)
            raise ReferenceError_(f"unknown reference scope '{scope}' in '${{{text}}}'" + (f"; {hint}" if hint else f"; use one of {', '.join(SCOPES)}"))
        alts.append(Target(scope, tuple(parts)))
    return Reference(text, tuple(alts))


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
    if s == "env":
        return A.value
    if s == "vars":  # substituted before validation, which reports unknown names
        return A.value
    if s == "epoch":
        if p:
            raise ReferenceError_("`${epoch}` has no fields")
        if not scope.in_loop:
            raise ReferenceError_("`${epoch}` exists only inside a loop")
        return A.value
    if s == "model":
        if p:
            raise ReferenceError_("`${model}` has no fields; reference the model as a whole")
        if not scope.has_model:
            raise ReferenceError_("`${model}` is used but the recipe has no top-level `model:`")
        return A.model
    if s == "data":
        name = ".".join(p)
        if name not in scope.data:
            hint = did_you_mean(name, scope.data)
            known = ", ".join(sorted(scope.data)) or "none"
            raise ReferenceError_(f"no data output 'data.{name}'; {hint or 'data outputs are: ' + known}")
        return A.dataset
    if s == "carry":
        if not scope.in_loop:
            raise ReferenceError_("`${carry...}` exists only inside a loop")
        if len(p) != 1 or p[0] not in scope.carry:
            name = p[0] if p else ""
            raise ReferenceError_(f"no carried value 'carry.{name}'; " + (did_you_mean(name, scope.carry) or "declare it under `loop.carry`"))
        return scope.carry[p[0]]
    if s == "prev":
        if not scope.in_loop:
            raise ReferenceError_("`${prev...}` exists only inside a loop (the previous epoch)")
        if not p or p[0] != "steps":
            raise ReferenceError_("write `${prev.steps.NAME.OUTPUT}`")
        return _step_output(p[1:], scope, "prev.steps")
    if s == "steps":
        return _step_output(p, scope, "steps")
    if s == "stages":
        if len(p) < 2:
            raise ReferenceError_("write `${stages.NAME.OUTPUT}`")
        name, out = p[0], p[1]
        if name in scope.later_stages:
            raise ReferenceError_(f"stage '{name}' runs later; a stage may only use outputs of earlier stages")
        if name not in scope.stages:
            raise ReferenceError_(f"no stage '{name}'; " + (did_you_mean(name, scope.stages) or f"earlier stages: {', '.join(scope.stages) or 'none'}"))
        outs = scope.stages[name]
        if out not in outs:
            raise ReferenceError_(f"stage '{name}' declares no output '{out}'; " + (did_you_mean(out, outs) or f"its outputs: {', '.join(outs) or 'none (declare `outputs:`)'}"))
        return _subfield(outs[out], p[2:], f"stages.{name}.{out}")
    raise ReferenceError_(f"unknown scope '{s}'")


def _step_output(p: tuple[str, ...], scope: Scope, prefix: str) -> ArtifactType:
    if len(p) < 2:
        raise ReferenceError_(f"write `${{{prefix}.NAME.OUTPUT}}`")
    name, out = p[0], p[1]
    if name not in scope.steps:
        raise ReferenceError_(f"no step '{name}'; " + (did_you_mean(name, scope.steps) or f"steps: {', '.join(scope.steps) or 'none'}"))
    outs = scope.steps[name]
    if out not in outs:
        raise ReferenceError_(f"step '{name}' has no output '{out}'; " + (did_you_mean(out, outs) or f"its outputs: {', '.join(outs)}"))
    return _subfield(outs[out], p[2:], f"{prefix}.{name}.{out}")


def _subfield(tp: ArtifactType, rest: tuple[str, ...], where: str) -> ArtifactType:
    if not rest:
        return tp
    if tp != A.metrics:
        raise ReferenceError_(f"'{where}' is a {tp.value}; only Metrics have fields ('{where}.{'.'.join(rest)}')")
    return A.value


def check(text: str, scope: Scope, expected: Optional[ArtifactType]) -> tuple[list[Target], list[str]]:
    """Check every reference in one string value. Returns (targets, problems)."""
    targets: list[Target] = []
    problems: list[str] = []
    for inner, whole in find(text):
        try:
            ref = parse(inner)
        except ReferenceError_ as exc:
            problems.append(str(exc))
            continue
        types = []
        for alt in ref.alternatives:
            targets.append(alt)
            try:
                types.append(target_type(alt, scope))
            except ReferenceError_ as exc:
                problems.append(str(exc))
        if not types:
            continue
        if whole and expected is not None and expected != A.value:
            wrong = [t for t in types if t not in (expected, A.value)]
            if wrong:
                problems.append(f"'${{{inner}}}' is a {wrong[0].value}, but a {expected.value} is expected here")
        if not whole and any(t not in (A.value,) for t in types):
            kinds = sorted({t.value for t in types if t != A.value})
            problems.append(f"'${{{inner}}}' is a {kinds[0]} and cannot be written inside text; use it as the whole value")
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
        for d in sorted(deps.get(n, ()), key=names.index):
            if d not in deps:
                continue
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
