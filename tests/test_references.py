"""The `${...}` grammar: parsing, types, scopes (prev/carry/stages/epoch), cycles, fallbacks, vars typing."""

import textwrap

import pytest

from engine.recipe import references as refs
from engine.recipe.errors import RecipeErrors
from engine.recipe.loader import load_recipe
from engine.recipe.validate import validate


def check(tmp_path, text, **kw):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(text))
    return validate(load_recipe(path, **kw), check_files=False)


def errors(tmp_path, text, **kw):
    with pytest.raises(RecipeErrors) as exc:
        check(tmp_path, text, **kw)
    return [str(e) for e in exc.value.errors]


LOOP = """\
recipe: 1
kind: loop
vars: {lr: 1.0e-5, steps: 3}
model: {source: tiny}
data: {sources: {train: {source: inline, rows: [{question: q, answers: [a]}]}}}
loop:
  epochs: 2
  carry: {policy: {init: "${model}", next: "${steps.train.model}"}}
  baseline: {skip: [select, train]}
  steps:
    select: {use: select, rows: "${prev.steps.judge.rows}", where: "judgment != judgment_label"}
    train: {use: train, method: sft, model: "${carry.policy}", data: "${steps.select.rows}", learning_rate: "${vars.lr}", max_steps: "${vars.steps}", save: "epoch_${epoch}"}
    collect: {use: collect, model: "${steps.train.model | carry.policy}", data: "${data.train}", template: qa/closed_book, n: 2}
    label: {use: label, samples: "${steps.collect.samples}", scorer: triviaqa_alias}
    judge: {use: evaluate, model: "${steps.train.model | carry.policy}", data: "${steps.label.rows}", template: judgment/can_you_answer, scorer: judgment}
  summary: {columns: {Judg: "${steps.judge.metrics.accuracy}"}}
outputs: {model: "${carry.policy}"}
"""


def test_parse_alternatives_and_env():
    ref = refs.parse("steps.train.model | carry.policy")
    assert [str(t) for t in ref.alternatives] == ["steps.train.model", "carry.policy"]
    assert refs.parse("env:HF_TOKEN").alternatives[0].scope == "env"
    with pytest.raises(refs.ReferenceError_, match="unknown reference scope 'stpes'.*did you mean 'steps'"):
        refs.parse("stpes.x.y")
    with pytest.raises(refs.ReferenceError_, match="malformed"):
        refs.parse("steps..x")


def test_valid_loop_and_whole_value_vars_keep_their_type(tmp_path):
    v = check(tmp_path, LOOP)
    train = v.recipe.loop.steps["train"]
    assert train.learning_rate == 1e-5 and isinstance(train.learning_rate, float)
    assert train.max_steps == 3 and isinstance(train.max_steps, int)
    assert train.save == "epoch_${epoch}"  # epoch is resolved at execution


def test_wrong_artifact_type(tmp_path):
    text = LOOP.replace('data: "${steps.select.rows}"', 'data: "${steps.collect.samples}"')
    assert any("'${steps.collect.samples}' is a Samples, but a Dataset is expected here" in e for e in errors(tmp_path, text))


def test_unknown_step_output_and_carry(tmp_path):
    text = LOOP.replace("${steps.label.rows}", "${steps.label.rowz}").replace('"${carry.policy}", data', '"${carry.polcy}", data')
    errs = errors(tmp_path, text)
    assert any("step 'label' has no output 'rowz' — " in e and e.endswith("; did you mean 'rows'?") for e in errs), errs
    assert any("no carried value 'carry.polcy' — " in e and e.endswith("; did you mean 'policy'?") for e in errs), errs


def test_cycle_is_rejected(tmp_path):
    text = LOOP.replace('rows: "${prev.steps.judge.rows}"', 'rows: "${steps.judge.rows}"')
    assert any("reference cycle: select -> judge -> train -> select" in e for e in errors(tmp_path, text))


def test_prev_epoch_and_carry_outside_loop(tmp_path):
    text = """\
    recipe: 1
    kind: train
    model: {source: tiny}
    data: {sources: {train: {source: inline, rows: [{question: q}]}}}
    train: {method: sft, data: "${prev.steps.x.rows}", model: "${carry.policy}", save: "e${epoch}"}
    """
    errs = errors(tmp_path, text)
    assert any("`${prev...}` exists only inside a loop" in e for e in errs)
    assert any("`${carry...}` exists only inside a loop" in e for e in errs)
    assert any("`${epoch}` exists only inside a loop" in e for e in errs)


def test_skipped_in_baseline_needs_a_fallback(tmp_path):
    text = LOOP.replace('model: "${steps.train.model | carry.policy}", data: "${data.train}"', 'model: "${steps.train.model}", data: "${data.train}"')
    assert any("step 'train' is skipped in the baseline epoch" in e for e in errors(tmp_path, text))


def test_prev_without_baseline_needs_a_fallback(tmp_path):
    text = LOOP.replace("  baseline: {skip: [select, train]}\n", "")
    assert any("does not exist in the first epoch" in e for e in errors(tmp_path, text))


def test_model_cannot_be_interpolated_into_text(tmp_path):
    text = LOOP.replace('save: "epoch_${epoch}"', 'save: "out_${carry.policy}"')
    assert any("is a Model and cannot be written inside text" in e for e in errors(tmp_path, text))


def test_metrics_fields_only(tmp_path):
    text = LOOP.replace("${steps.judge.metrics.accuracy}", "${steps.judge.rows.accuracy}")
    assert any("only Metrics have fields" in e for e in errors(tmp_path, text))


def test_unknown_var_with_location(tmp_path):
    errs = errors(tmp_path, LOOP.replace("${vars.lr}", "${vars.lrr}"))
    assert any("r.yaml:12:" in e and "unknown variable '${vars.lrr}'" in e and "did you mean 'lr'?" in e for e in errs), errs
    assert len(errs) == 1, errs  # no second complaint about the unresolved string's type


PIPELINE = """\
recipe: 1
kind: pipeline
vars: {adapter: lora}
model: {source: tiny}
data: {sources: {train: {source: inline, rows: [{question: q, answers: [a]}]}}}
stages:
  train:
    kind: train
    train: {method: sft, data: "${data.train}", template: qa/closed_book, adapter: "${vars.adapter}"}
    outputs: {model: "${steps.train.model}"}
  merge: {use: merge, when: "{{ vars.adapter == 'lora' }}", model: "${stages.train.model}"}
outputs: {model: "${stages.merge.model | stages.train.model}"}
"""


def test_pipeline_stage_outputs(tmp_path):
    v = check(tmp_path, PIPELINE)
    assert v.recipe.stages["train"].train.adapter.type == "lora"


def test_stage_used_before_it_runs(tmp_path):
    text = PIPELINE.replace('data: "${data.train}"', 'data: "${stages.merge.model}"')
    assert any("stage 'merge' runs later" in e for e in errors(tmp_path, text))


def test_stage_output_not_declared(tmp_path):
    text = PIPELINE.replace("${stages.train.model}\"}", "${stages.train.metrics}\"}")
    assert any("stage 'train' declares no output 'metrics'" in e for e in errors(tmp_path, text))


def test_file_stage_with_set(tmp_path):
    (tmp_path / "sub.yaml").write_text(textwrap.dedent("""\
        recipe: 1
        kind: train
        model: {source: tiny}
        data: {sources: {train: {source: inline, rows: [{question: q}]}}}
        train: {method: sft, data: "${data.train}", learning_rate: 1.0e-4}
        outputs: {model: "${steps.train.model}"}
        """))
    text = """\
    recipe: 1
    kind: pipeline
    stages:
      first: {recipe: sub.yaml, set: {train.learning_rate: 2.0e-4}}
      merged: {use: merge, model: "${stages.first.model}"}
    """
    v = check(tmp_path, text)
    assert v.stage_recipes["first"].recipe.train.learning_rate == 2e-4


def test_file_stage_cycle(tmp_path):
    text = """\
    recipe: 1
    kind: pipeline
    stages:
      again: {recipe: r.yaml}
    """
    assert any("recipe stage cycle" in e for e in errors(tmp_path, text))
