"""The executor: step order, loop epochs with a baseline and carried models, fallbacks, summaries, resume,
the step cache and stage selection — with small fake step types so only the executor is under test."""

import json

import pytest

from engine import catalog
from engine.plan.execute import Executor
from engine.plan.selection import StageSelection
from engine.recipe.errors import EngineError
from engine.runs.run_dir import RunDir
from run_support import make_run

LOOP = """\
recipe: 1
kind: loop
name: fake-loop
model: {source: tiny}
data: {sources: {train: {source: inline, rows: [{question: q, answers: [a]}]}}}
loop:
  epochs: 2
  carry: {policy: {init: "${model}", next: "${steps.train.model}"}}
  baseline: {skip: [select, train]}
  steps:
    select: {use: select, rows: "${prev.steps.judge.rows}", where: "wrong"}
    train: {use: train, method: sft, model: "${carry.policy}", data: "${steps.select.rows}", save: "epoch_${epoch}"}
    judge: {use: evaluate, model: "${steps.train.model | carry.policy}", data: "${data.train}", scorer: judgment}
  summary: {columns: {Acc: "${steps.judge.metrics.accuracy}"}}
outputs: {model: "${carry.policy}"}
"""


class Fakes:
    """Fake step types recording every call."""

    def __init__(self, fail_at=None, empty_select=False):
        self.calls = []
        self.fail_at = fail_at
        self.empty_select = empty_select
        self.accuracy = lambda epoch: 0.5 + 0.1 * (epoch or 0)
        self.gate_at = None

    def select(self, ctx):
        self.calls.append((ctx.step_id, ctx.inputs["rows"]["epoch"]))
        return {"rows": {"type": "Dataset", "rows": 0 if self.empty_select else 3, "epoch": ctx.epoch}}

    def train(self, ctx):
        self.calls.append((ctx.step_id, ctx.inputs["model"]["name"], ctx.save_name))
        if self.fail_at == ctx.step_id:
            raise EngineError("boom")
        model = ctx.step_dir / (ctx.save_name or "model")
        model.mkdir(parents=True, exist_ok=True)
        return {"model": {"type": "Model", "name": f"trained@{ctx.epoch}", "path": str(model)},
                "metrics": {"type": "Metrics", "values": {}}}

    def evaluate(self, ctx):
        from engine.evaluate.compare import GateFailed

        self.calls.append((ctx.step_id, ctx.inputs["model"]["name"]))
        outputs = {"metrics": {"type": "Metrics", "values": {"accuracy": self.accuracy(ctx.epoch)}},
                   "rows": {"type": "Dataset", "rows": 1, "epoch": ctx.epoch}}
        if ctx.step_id == self.gate_at:
            raise GateFailed("gate failed", outputs=outputs, failures=["accuracy < 0.9"])
        return outputs


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    monkeypatch.setenv("RECIPE_ENGINE_CACHE", str(tmp_path / "cache"))
    f = Fakes()
    monkeypatch.setitem(catalog.STEPS._entries, "select", lambda ctx: f.select(ctx))
    monkeypatch.setitem(catalog.STEPS._entries, "train", lambda ctx: f.train(ctx))
    monkeypatch.setitem(catalog.STEPS._entries, "evaluate", lambda ctx: f.evaluate(ctx))
    monkeypatch.setitem(catalog.STEPS._entries, "merge", lambda ctx: {"model": {"type": "Model", "name": "merged:" + ctx.inputs["model"]["name"]}})
    monkeypatch.setitem(catalog.STEPS._entries, "data", "engine.plan.steps.data:run")
    monkeypatch.setitem(catalog.METHODS._entries, "sft", lambda: None)
    monkeypatch.setattr(Executor, "_data_output", lambda self, name, plan: {"type": "Dataset", "rows": 1, "name": name, "epoch": None})
    monkeypatch.setattr(Executor, "_recipe_model", lambda self, plan: {"type": "Model", "name": "base"})
    return f


def test_loop_baseline_carry_and_summary(fakes, tmp_path):
    run, plan = make_run(tmp_path, LOOP)
    Executor(run, plan, tmp_path).execute()
    assert fakes.calls == [
        ("epoch_0/judge", "base"),                       # baseline: select and train skipped, fallback to carry
        ("epoch_1/select", 0), ("epoch_1/train", "base", "epoch_1"), ("epoch_1/judge", "trained@1"),
        ("epoch_2/select", 1), ("epoch_2/train", "trained@1", "epoch_2"), ("epoch_2/judge", "trained@2"),
    ]
    state = json.loads((run.path / "state.json").read_text())
    assert state["status"] == "done"
    assert state["steps"]["epoch_0/train"]["status"] == "skipped"
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary == [{"Epoch": 0, "Acc": 0.5}, {"Epoch": 1, "Acc": 0.6}, {"Epoch": 2, "Acc": 0.7}]
    assert "| Epoch | Acc |" in (run.path / "summary.md").read_text()


def test_epoch_with_nothing_to_train_is_skipped(fakes, tmp_path):
    fakes.empty_select = True
    run, plan = make_run(tmp_path, LOOP)
    Executor(run, plan, tmp_path, use_cache=False).execute()
    state = json.loads((run.path / "state.json").read_text())
    assert state["steps"]["epoch_1/train"] == {**state["steps"]["epoch_1/train"], "status": "skipped", "reason": "no rows to train on"}
    assert ("epoch_2/judge", "base") in fakes.calls  # the policy carried over unchanged


def _stopped(run) -> dict:
    state = json.loads((run.path / "state.json").read_text())
    return {"status": state["status"], "stopped": state["steps"].get("loop:stopped", {}).get("outputs"),
            "summary": json.loads((run.path / "summary.json").read_text())}


def test_a_failing_gate_keeps_the_step_and_ends_the_loop(fakes, tmp_path):
    fakes.gate_at = "epoch_1/judge"
    run, plan = make_run(tmp_path, LOOP)
    Executor(run, plan, tmp_path, use_cache=False).execute()
    result = _stopped(run)
    assert result["status"] == "done" and [c[0] for c in fakes.calls][-1] == "epoch_1/judge"   # no epoch 2
    assert result["stopped"] == {"epoch": 1, "reason": "gate", "detail": "epoch_1/judge: accuracy < 0.9", "step": "judge"}
    assert result["summary"] == [{"Epoch": 0, "Acc": 0.5}, {"Epoch": 1, "Acc": 0.6}]             # the gated step's metrics
    assert "Stopped after epoch 1: gate" in (run.path / "summary.md").read_text()
    fakes.calls = []  # a resume ends the loop at the same place
    Executor(RunDir.open(run.path), plan, tmp_path, use_cache=False).execute()
    assert fakes.calls == []


def test_a_failing_gate_goes_on_when_told(fakes, tmp_path):
    fakes.gate_at = "epoch_1/judge"
    run, plan = make_run(tmp_path, LOOP.replace("  summary:", "  stop: {on_gate_failure: false}\n  summary:"))
    Executor(run, plan, tmp_path, use_cache=False).execute()
    assert ("epoch_2/judge", "trained@2") in fakes.calls and _stopped(run)["stopped"] is None
    events = [json.loads(l) for l in (run.path / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "gate_failed"] == ["epoch_1/judge"]


def test_plateau_stops_the_loop(fakes, tmp_path):
    fakes.accuracy = lambda epoch: {0: 0.5, 1: 0.6, 2: 0.6}.get(epoch, 0.6)
    text = LOOP.replace("epochs: 2", "epochs: 4").replace(
        "  summary:", "  stop: {plateau: {metric: Acc, patience: 1, min_delta: 0.01}}\n  summary:")
    run, plan = make_run(tmp_path, text)
    Executor(run, plan, tmp_path, use_cache=False).execute()
    result = _stopped(run)
    assert result["stopped"] == {"epoch": 2, "reason": "plateau", "detail": "Acc did not improve for 1 epoch"}
    assert [r["Epoch"] for r in result["summary"]] == [0, 1, 2]


def test_an_empty_epoch_stops_the_loop_when_told(fakes, tmp_path):
    fakes.empty_select = True
    run, plan = make_run(tmp_path, LOOP.replace("  summary:", "  stop: {on_empty: stop}\n  summary:"))
    Executor(run, plan, tmp_path, use_cache=False).execute()
    assert _stopped(run)["stopped"]["reason"] == "empty" and not any(c[0].startswith("epoch_2/") for c in fakes.calls)


def test_retain_keeps_the_newest_models(fakes, tmp_path):
    run, plan = make_run(tmp_path, LOOP.replace("epochs: 2", "epochs: 3").replace("outputs: {model", "output: {retain: 1}\noutputs: {model"))
    Executor(run, plan, tmp_path, use_cache=False).execute()
    models = {e: run.path / "steps" / f"epoch_{e}" / "train" / f"epoch_{e}" for e in (1, 2, 3)}
    assert [models[e].is_dir() for e in (1, 2, 3)] == [False, False, True]
    assert ("epoch_3/train", "trained@2", "epoch_3") in fakes.calls      # epoch 2's model was carried before removal
    assert not (run.path / "epoch_1").is_symlink() and (run.path / "epoch_3").is_dir()


def test_resume_after_failure_continues_at_the_failed_step(fakes, tmp_path):
    fakes.fail_at = "epoch_2/train"
    run, plan = make_run(tmp_path, LOOP)
    with pytest.raises(EngineError, match="boom"):
        Executor(run, plan, tmp_path, use_cache=False).execute()
    done_before = [c[0] for c in fakes.calls]
    fakes.fail_at, fakes.calls = None, []
    Executor(RunDir.open(run.path), plan, tmp_path, use_cache=False).execute()
    assert [c[0] for c in fakes.calls] == ["epoch_2/train", "epoch_2/judge"]
    assert fakes.calls[0][1] == "trained@1"  # carried model restored from the finished epoch
    assert "epoch_2/select" in done_before


def test_cache_reuses_identical_steps_across_runs(fakes, tmp_path):
    first, plan = make_run(tmp_path, LOOP)
    Executor(first, plan, tmp_path).execute()
    n = len(fakes.calls)
    second, plan2 = make_run(tmp_path, LOOP)
    Executor(second, plan2, tmp_path).execute()
    assert len(fakes.calls) == n  # nothing recomputed
    events = [json.loads(l) for l in (second.path / "events.jsonl").read_text().splitlines()]
    assert sum(e["type"] == "step_reused" for e in events) == 7
    third, plan3 = make_run(tmp_path, LOOP.replace("method: sft,", "method: sft, learning_rate: 1.0e-4,"))
    fakes.calls = []
    Executor(third, plan3, tmp_path).execute()
    assert fakes.calls[0] == ("epoch_1/train", "base", "epoch_1")  # baseline judge reused; training recomputed


PIPELINE = """\
recipe: 1
kind: pipeline
name: fake-pipe
model: {source: tiny}
data: {sources: {train: {source: inline, rows: [{question: q}]}}}
stages:
  first:
    kind: train
    train: {method: sft, data: "${data.train}"}
    outputs: {model: "${steps.train.model}"}
  merge: {use: merge, model: "${stages.first.model}"}
  check: {use: evaluate, model: "${stages.merge.model}", data: "${data.train}", scorer: judgment}
"""


def test_pipeline_stages_and_selection_with_reuse(fakes, tmp_path):
    run, plan = make_run(tmp_path, PIPELINE)
    Executor(run, plan, tmp_path, use_cache=False).execute()
    assert [c[0] for c in fakes.calls] == ["first/train", "check"]
    assert fakes.calls[1][1] == "merged:trained@None"
    fakes.calls = []
    again, plan2 = make_run(tmp_path, PIPELINE)
    Executor(again, plan2, tmp_path, use_cache=False, selection=StageSelection(only=("check",), reuse=run.path)).execute()
    assert fakes.calls == [("check", "merged:trained@None")]
    with pytest.raises(EngineError, match="no stage 'chek'; did you mean 'check'"):
        StageSelection(only=("chek",)).check(plan)


def test_not_executable_is_reported_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("RECIPE_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(catalog.STEPS._entries, "select", catalog.STEPS._entries["record"])
    run, plan = make_run(tmp_path, LOOP)
    if not catalog.STEPS.is_executable("record"):
        with pytest.raises(EngineError, match="not yet executable in this version: step type 'select'"):
            Executor(run, plan, tmp_path).execute()
        assert json.loads((run.path / "state.json").read_text())["status"] == "failed"


def test_an_inline_stage_runs_with_its_own_data_seed_and_vars(fakes, tmp_path, monkeypatch):
    seen = {}

    def train(ctx):
        seen.update(seed=ctx.seed, data=ctx.inputs["data"]["name"], sources=list(ctx.plan["data"]["sources"]),
                    lr=ctx.step["params"]["learning_rate"], tracking=ctx.plan["tracking"]["backends"])
        return {"model": {"type": "Model", "name": "t"}, "metrics": {"type": "Metrics", "values": {}}}

    monkeypatch.setitem(catalog.STEPS._entries, "train", train)
    text = PIPELINE.replace('''    train: {method: sft, data: "${data.train}"}''', '''    seed: 7
    vars: {lr: 0.5}
    tracking: {backends: [none]}
    data: {sources: {own: {source: inline, rows: [{question: x}]}}}
    train: {method: sft, data: "${data.own}", learning_rate: "${vars.lr}"}''')
    run, plan = make_run(tmp_path, text)
    Executor(run, plan, tmp_path, use_cache=False).execute()
    assert seen == {"seed": 7, "data": "own", "sources": ["own"], "lr": 0.5, "tracking": ["none"]}
    assert [c[0] for c in fakes.calls] == ["check"] and plan["seed"] == 0   # the pipeline's own steps keep its seed


def test_data_step_builds_only_what_it_names_under_the_names_it_gives(fakes, tmp_path):
    rows = ", ".join(f"{{question: q{i}, answers: [a]}}" for i in range(10))
    text = f"""\
    recipe: 1
    kind: pipeline
    name: data-only
    data:
      sources:
        a: {{source: inline, rows: [{rows}]}}
        b: {{source: inline, rows: [{rows.replace("q", "r")}]}}
      split: {{ratios: {{train: 1, test: 1}}, seed: 0}}
    stages:
      build: {{use: data, outputs: [test.a, train.b], info: meta.json, index: false}}
    """
    run, plan = make_run(tmp_path, text)
    Executor(run, plan, tmp_path, use_cache=False).execute()
    built = run.path / "steps" / "build" / "data"
    files = sorted(p.relative_to(built).as_posix() for p in built.rglob("*.jsonl"))
    assert files == ["test/a_test.jsonl", "train/b_train.jsonl"]
    assert (built / "meta.json").is_file() and not list(built.rglob("info.json"))
    assert not list(built.rglob("*_index.json"))
