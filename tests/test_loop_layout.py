"""Fast executor checks around the loop tests (fake steps that write files, no models): `save:` outputs linked at
the top of the run or stage directory (the seed's layout), and stage selections whose inputs nothing provides."""

from __future__ import annotations

import json

import pytest

from engine import catalog
from engine.plan.execute import Executor
from engine.plan.selection import StageSelection
from engine.recipe.errors import EngineError
from run_support import make_run

LOOP = """\
recipe: 1
kind: loop
name: layout
model: {source: tiny}
data: {sources: {train: {source: inline, rows: [{question: q, answers: [a]}]}}}
loop:
  epochs: 2
  carry: {policy: {init: "${model}", next: "${steps.train.model}"}}
  baseline: {skip: [train]}
  steps:
    train: {use: train, method: sft, model: "${carry.policy}", data: "${data.train}", save: "epoch_${epoch}"}
    collect: {use: collect, model: "${steps.train.model | carry.policy}", data: "${data.train}", template: qa/closed_book,
              save: "{{ 'responses.jsonl' if epoch == 0 else 'responses_epoch%d.jsonl' % epoch }}"}
    judge: {use: evaluate, model: "${steps.train.model | carry.policy}", data: "${data.train}", scorer: judgment,
            save: "latest.jsonl"}
    clash: {use: evaluate, model: "${carry.policy}", data: "${data.train}", scorer: judgment, save: "state.json"}
"""


def write(ctx):
    path = ctx.step_dir / (ctx.save_name or "out.jsonl")
    if ctx.step["use"] == "train":
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text("{}")
        return {"model": {"type": "Model", "path": str(path), "fingerprint": str(path)}, "metrics": {"type": "Metrics", "values": {}}}
    path.write_text(f"{ctx.step_id}\n")
    return {"samples" if ctx.step["use"] == "collect" else "rows": {"type": "Dataset", "path": str(path), "rows": 1,
                                                                     "fingerprint": ctx.step_id}}


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    monkeypatch.setenv("RECIPE_ENGINE_CACHE", str(tmp_path / "cache"))
    for use in ("train", "collect", "evaluate", "label"):
        monkeypatch.setitem(catalog.STEPS._entries, use, write)
    monkeypatch.setitem(catalog.METHODS._entries, "sft", lambda: None)
    monkeypatch.setattr(Executor, "_data_output", lambda self, name, plan: {"type": "Dataset", "rows": 1, "path": "/dev/null", "fingerprint": name})
    monkeypatch.setattr(Executor, "_recipe_model", lambda self, plan: {"type": "Model", "path": "/base", "fingerprint": "base"})


def test_saved_outputs_are_linked_at_the_top_of_the_run(fakes, tmp_path):
    run, plan = make_run(tmp_path, LOOP)
    Executor(run, plan, tmp_path, use_cache=False).execute()
    top = run.path
    assert (top / "responses.jsonl").read_text() == "epoch_0/collect\n"
    assert (top / "responses_epoch2.jsonl").read_text() == "epoch_2/collect\n"
    assert (top / "epoch_1").is_symlink() and (top / "epoch_1" / "config.json").is_file()
    assert not (top / "epoch_0").exists()  # baseline: no training
    assert (top / "latest.jsonl").read_text() == "epoch_2/judge\n"  # the same name every epoch: the latest wins
    assert json.loads((top / "state.json").read_text())["status"] == "done"  # the run's own records keep their names
    assert (top / "responses.jsonl").resolve() == (top / "steps" / "epoch_0" / "collect" / "responses.jsonl").resolve()
    assert not (top / "responses.jsonl").readlink().is_absolute()  # relative: the run directory can be moved


PIPELINE = """\
recipe: 1
kind: pipeline
name: pick
model: {source: tiny}
data: {sources: {train: {source: inline, rows: [{question: q, answers: [a]}]}}}
stages:
  first:
    kind: loop
    loop:
      epochs: 1
      carry: {policy: {init: "${model}", next: "${model}"}}
      steps:
        collect: {use: collect, model: "${carry.policy}", data: "${data.train}", template: qa/closed_book, save: "responses.jsonl"}
    outputs: {samples: "${steps.collect.samples}"}
  second: {use: label, samples: "${stages.first.samples}", scorer: triviaqa_alias, save: "labels.jsonl"}
  third: {use: evaluate, data: "${data.train}", scorer: judgment}
"""


def test_stage_outputs_are_linked_in_the_stage_directory(fakes, tmp_path):
    run, plan = make_run(tmp_path, PIPELINE)
    Executor(run, plan, tmp_path, use_cache=False).execute()
    assert (run.path / "first" / "responses.jsonl").read_text() == "first/epoch_1/collect\n"
    assert (run.path / "labels.jsonl").read_text() == "second\n"


def test_a_selection_whose_inputs_nothing_provides_is_refused_before_running(fakes, tmp_path):
    run, plan = make_run(tmp_path, PIPELINE)
    with pytest.raises(EngineError, match="stage 'second' uses the outputs of stage 'first', which this selection does "
                                          "not run; add --reuse RUN_DIR"):
        StageSelection(only=("second",)).check(plan)
    StageSelection(only=("third",)).check(plan)  # needs nothing from the others
    StageSelection(skip=("second",)).check(plan)  # nothing later needs `second`
    StageSelection(only=("second",), reuse=run.path).check(plan)  # --reuse provides it (checked when it runs)
