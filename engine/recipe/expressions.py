"""Sandboxed Jinja2 expressions: `when:` conditions, `where:`/`filter` predicates, `save: "epoch_{{ epoch }}"`.

An expression is written either bare (`judgment != ability_label`) or wrapped (`"{{ vars.adapter == 'lora' }}"`);
both evaluate to a Python value (a bool stays a bool, a list stays a list). A string that mixes text with
`{{ ... }}` (`epoch_{{ epoch }}`) is a template: `render_string` renders it, and `evaluate` returns the rendered str.

Names are strict: an undefined name is an `ExpressionError` naming the expression and the names available,
never a silent None. The sandbox blocks attribute tricks such as `().__class__.__bases__`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Mapping

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from engine.recipe.errors import EngineError, did_you_mean

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)

_WRAPPED = re.compile(r"^\s*\{\{-?(?P<inner>.*?)-?\}\}\s*$", re.DOTALL)
_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")


class ExpressionError(EngineError):
    """An expression that does not parse, names something undefined, or fails to evaluate."""

    def __init__(self, expr: str, message: str):
        self.expr = expr
        self.message = message
        super().__init__(f"expression {expr!r}: {message}")


def _split(expr: str) -> tuple[str, str]:
    """('expr', inner) for a bare or a fully wrapped expression; ('template', text) for text mixed with {{ }}."""
    match = _WRAPPED.match(expr)
    if match and "{{" not in match["inner"] and "}}" not in match["inner"]:
        return "expr", match["inner"].strip()
    if "{{" in expr or "{%" in expr:
        return "template", expr
    return "expr", expr.strip()


def _syntax_message(err: TemplateSyntaxError) -> str:
    return f"syntax error: {err.message}" + (f" (line {err.lineno})" if err.lineno and err.lineno > 1 else "")


@lru_cache(maxsize=2048)
def _compiled(expr: str) -> tuple[str, Any]:
    kind, body = _split(expr)
    if not body:
        raise ExpressionError(expr, "empty expression")
    try:
        if kind == "expr":
            return kind, _ENV.compile_expression(body, undefined_to_none=False)
        return kind, _ENV.from_string(body)
    except TemplateSyntaxError as err:
        raise ExpressionError(expr, _syntax_message(err)) from None


def check_expression(expr: str) -> str | None:
    """The syntax error message for `expr`, or None when it parses."""
    if not isinstance(expr, str):
        return f"expected an expression string, got {type(expr).__name__}"
    try:
        _compiled(expr)
    except ExpressionError as err:
        return err.message
    return None


def _available(context: Mapping[str, Any]) -> str:
    names = sorted(str(k) for k in context)
    return ", ".join(names) if names else "none"


def _failure(expr: str, err: Exception, context: Mapping[str, Any]) -> ExpressionError:
    if isinstance(err, SecurityError):
        return ExpressionError(expr, f"not allowed in the sandbox: {err}")
    text = getattr(err, "message", None) or str(err)
    missing = _UNDEFINED_NAME.match(text)
    if missing:
        hint = did_you_mean(missing[1], context)
        message = f"'{missing[1]}' is undefined (available names: {_available(context)})"
        return ExpressionError(expr, message + (f"; {hint}" if hint else ""))
    if isinstance(err, TemplateError):
        return ExpressionError(expr, f"{text} (available names: {_available(context)})")
    return ExpressionError(expr, f"{type(err).__name__}: {text}")


def _strict(value: Any) -> Any:
    """A bare undefined result (`x`, `row.missing`, `().__class__`) raises instead of becoming None."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return value


def evaluate(expr: str, context: Mapping[str, Any]) -> Any:
    """The Python value of `expr` over `context`; a text template (`epoch_{{ epoch }}`) gives its rendered str."""
    kind, compiled = _compiled(expr)
    try:
        if kind == "expr":
            return _strict(compiled(**context))
        return compiled.render(**context)
    except ExpressionError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of user code becomes one clear error
        raise _failure(expr, err, context) from None


def evaluate_bool(expr: str, context: Mapping[str, Any]) -> bool:
    """`evaluate` for `when:`, `where:` and `filter`: the result's truth value."""
    value = evaluate(expr, context)
    try:
        return bool(value)
    except Exception as err:  # noqa: BLE001
        raise _failure(expr, err, context) from None


def render_string(text: str, context: Mapping[str, Any]) -> str:
    """Render text mixed with `{{ ... }}` (e.g. `epoch_{{ epoch }}`) to a str; plain text comes back unchanged."""
    if "{{" not in text and "{%" not in text:
        return text
    try:
        template = _template(text)
    except TemplateSyntaxError as err:
        raise ExpressionError(text, _syntax_message(err)) from None
    try:
        return template.render(**context)
    except Exception as err:  # noqa: BLE001
        raise _failure(text, err, context) from None


@lru_cache(maxsize=1024)
def _template(text: str) -> Any:
    return _ENV.from_string(text)


def _parse(expr: str) -> nodes.Template:
    """The Jinja syntax tree of an expression (`{{ }}` added around a bare one), for static reference checks."""
    kind, body = _split(expr)
    source = "{{ " + body + " }}" if kind == "expr" else body
    try:
        return _ENV.parse(source)
    except TemplateSyntaxError as err:
        raise ExpressionError(expr, _syntax_message(err)) from None


def expression_names(expr: str) -> set[str]:
    """The top-level names `expr` reads (`vars.lr > 0` -> {'vars'}), for static reference checks."""
    return set(meta.find_undeclared_variables(_parse(expr)))


def expression_paths(expr: str) -> set[str]:
    """Dotted attribute paths the expression reads (`vars.adapter == 'lora'` -> {'vars.adapter'})."""
    tree = _parse(expr)
    paths: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Name)):
        parts: list[str] = []
        cur: nodes.Node = node
        while isinstance(cur, nodes.Getattr):
            parts.append(cur.attr)
            cur = cur.node
        if isinstance(cur, nodes.Name):
            paths.add(".".join([cur.name, *reversed(parts)]))
    declared = expression_names(expr)
    return {p for p in paths if p.split(".")[0] in declared and not any(q.startswith(p + ".") for q in paths)}
