"""Sandboxed Jinja2 expressions: `when:`, `where:`, `save: "epoch_{{ epoch }}"`."""

from __future__ import annotations

import pytest

from engine.recipe.errors import EngineError
from engine.recipe.expressions import (
    ExpressionError,
    check_expression,
    evaluate,
    evaluate_bool,
    expression_names,
    expression_paths,
    render_string,
)

ROW = {"judgment": "yes", "ability_label": "no", "score": 0.75, "answers": ["Paris", "paris"]}


@pytest.mark.parametrize("expr", ["judgment != ability_label", "{{ judgment != ability_label }}",
                                  "{{judgment != ability_label}}", "  {{- judgment != ability_label -}}  "])
def test_bare_and_wrapped_forms_agree(expr):
    assert evaluate(expr, ROW) is True
    assert check_expression(expr) is None


def test_evaluate_returns_typed_values():
    assert evaluate("score * 2", ROW) == 1.5
    assert evaluate("{{ answers }}", ROW) == ["Paris", "paris"]
    assert evaluate("answers | length", ROW) == 2
    assert evaluate("{{ {'a': 1} }}", {}) == {"a": 1}
    assert evaluate("vars.lr", {"vars": {"lr": 4e-6}}) == 4e-6
    assert evaluate("none", {}) is None


def test_evaluate_bool_for_when_and_where():
    ctx = {"vars": {"adapter": "lora"}}
    assert evaluate_bool("{{ vars.adapter == 'lora' }}", ctx) is True
    assert evaluate_bool("vars.adapter == 'full'", ctx) is False
    assert evaluate_bool("answers", ROW) is True
    assert evaluate_bool("score > 0.9", ROW) is False


def test_undefined_name_names_expression_and_available_names():
    with pytest.raises(ExpressionError) as info:
        evaluate("judgment != abilty_label", ROW)
    message = str(info.value)
    assert "judgment != abilty_label" in message
    assert "'abilty_label' is undefined" in message
    assert "ability_label, answers, judgment, score" in message
    assert "did you mean 'ability_label'" in message
    assert isinstance(info.value, EngineError)


def test_bare_undefined_name_is_an_error_not_none():
    with pytest.raises(ExpressionError, match="'missing' is undefined"):
        evaluate("missing", ROW)
    with pytest.raises(ExpressionError, match="no attribute 'nope'"):
        evaluate("{{ vars.nope }}", {"vars": {}})
    with pytest.raises(ExpressionError, match="undefined"):
        evaluate_bool("missing", {})


@pytest.mark.parametrize("expr", ["().__class__.__bases__", "{{ ''.__class__.__mro__[1].__subclasses__() }}",
                                  "().__class__", "answers.__class__"])
def test_sandbox_blocks_attribute_escapes(expr):
    with pytest.raises(ExpressionError, match="not allowed in the sandbox"):
        evaluate(expr, ROW)


def test_sandbox_blocks_mutation():
    with pytest.raises(ExpressionError):
        evaluate("answers.append('x')", ROW)
    assert ROW["answers"] == ["Paris", "paris"]


def test_runtime_errors_become_expression_errors():
    with pytest.raises(ExpressionError, match="ZeroDivisionError"):
        evaluate("1 / 0", {})
    with pytest.raises(ExpressionError):
        evaluate("score + 'a'", ROW)


def test_syntax_errors_are_reported():
    assert "syntax error" in check_expression("judgment ==")
    assert "syntax error" in check_expression("{{ a b }}")
    assert check_expression("") == "empty expression"
    assert check_expression(3) is not None
    with pytest.raises(ExpressionError, match="syntax error"):
        evaluate("{{ a ==== b }}", {"a": 1, "b": 1})


def test_text_mixed_with_expressions_renders_to_str():
    assert render_string("epoch_{{ epoch }}", {"epoch": 3}) == "epoch_3"
    assert render_string("plain", {}) == "plain"
    assert evaluate("epoch_{{ epoch }}", {"epoch": 2}) == "epoch_2"
    assert evaluate("{{ a }}-{{ b }}", {"a": 1, "b": 2}) == "1-2"
    assert check_expression("epoch_{{ epoch }}") is None
    with pytest.raises(ExpressionError, match="'epoch' is undefined"):
        render_string("epoch_{{ epoch }}", {})
    with pytest.raises(ExpressionError, match="syntax error"):
        render_string("epoch_{{ epoch ", {})


def test_expression_names_and_paths():
    assert expression_names("judgment != ability_label") == {"judgment", "ability_label"}
    assert expression_names("{{ vars.adapter == 'lora' and epoch > 0 }}") == {"vars", "epoch"}
    assert expression_names("epoch_{{ epoch }}") == {"epoch"}
    assert expression_names("y | select('odd') | list") == {"y"}
    assert expression_paths("vars.adapter == 'lora' and steps.train.model") == {"vars.adapter", "steps.train.model"}
    with pytest.raises(ExpressionError):
        expression_names("a ==")
