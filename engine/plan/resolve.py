"""Resolving `${...}` references at execution time against what the run has produced so far."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from engine.recipe import references as refs
from engine.recipe.errors import EngineError
from engine.recipe.models.common import REF_RE


class Missing(Exception):
    """A reference whose target does not exist (yet, or in this epoch); the next alternative is tried."""


@dataclass
class Frame:
    """The values references can see at one point of a run."""

    data: Callable[[str], dict]                       # data output name -> Dataset artifact (built on demand)
    model: Callable[[], dict]                         # the recipe's model -> Model artifact (resolved on demand)
    variables: Mapping[str, Any] = field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)       # this epoch/graph: step -> outputs
    prev: Optional[dict[str, dict[str, Any]]] = None                      # previous epoch's steps
    carry: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    epoch: Optional[int] = None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)


def _output(outputs: dict[str, dict[str, Any]], parts: tuple[str, ...], what: str) -> Any:
    if len(parts) < 2 or parts[0] not in outputs or parts[1] not in outputs[parts[0]]:
        raise Missing(what)
    value = outputs[parts[0]][parts[1]]
    for key in parts[2:]:  # a field of Metrics
        values = value.get("values", value) if isinstance(value, dict) else None
        if not isinstance(values, dict) or key not in values:
            raise Missing(what)
        value = values[key]
    return value


def target_value(t: refs.Target, frame: Frame) -> Any:
    s, p = t.scope, t.parts
    if s == "env":
        if p[0] not in frame.environ:
            raise Missing(f"environment variable {p[0]}")
        return frame.environ[p[0]]
    if s == "vars":
        node: Any = frame.variables
        for part in p:
            if not isinstance(node, Mapping) or part not in node:
                raise Missing(str(t))
            node = node[part]
        return node
    if s == "epoch":
        if frame.epoch is None:
            raise Missing("epoch")
        return frame.epoch
    if s == "model":
        return frame.model()
    if s == "data":
        return frame.data(".".join(p))
    if s == "steps":
        return _output(frame.steps, p, str(t))
    if s == "prev":
        if frame.prev is None:
            raise Missing(str(t))
        return _output(frame.prev, p[1:], str(t))
    if s == "carry":
        if p[0] not in frame.carry:
            raise Missing(str(t))
        return frame.carry[p[0]]
    if s == "stages":
        return _output(frame.stages, p, str(t))
    raise Missing(str(t))


def resolve_reference(inner: str, frame: Frame) -> Any:
    """The value of `${inner}`: the first alternative that exists."""
    ref = refs.parse(inner)
    tried = []
    for alt in ref.alternatives:
        try:
            return target_value(alt, frame)
        except Missing as exc:
            tried.append(str(exc))
    raise Missing(f"${{{inner}}} (none of {', '.join(tried)} exists here)")


def resolve_value(value: Any, frame: Frame) -> Any:
    """Resolve references in a value: a whole-value reference keeps its type, embedded ones become text."""
    if isinstance(value, dict):
        return {k: resolve_value(v, frame) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_value(v, frame) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = REF_RE.fullmatch(value.strip())
    if whole:
        return resolve_reference(whole.group(1), frame)
    return REF_RE.sub(lambda m: str(_scalar(resolve_reference(m.group(1), frame))), value)


def _scalar(value: Any) -> Any:
    if isinstance(value, dict) and value.get("type") == "Value":
        return value.get("value")
    return value


def resolve_or_fail(value: Any, frame: Frame, where: str) -> Any:
    try:
        return resolve_value(value, frame)
    except Missing as exc:
        raise EngineError(f"{where}: cannot resolve {exc}") from None
