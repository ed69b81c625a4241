"""Online GRPO in rounds with an evaluation after each round and a pass-rate curriculum (issue 7, item 5), through
`recipe run tests/fixtures/loop/grpo_rounds.yaml` with real steps: collect (probe) → label (pass rate) → select
(drop the prompts always or never solved) → train (GRPO) → evaluate, two rounds, the policy carried."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loop_support import events, read_jsonl, recipe, run_dir_of, state, trained_model  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).parent / "fixtures" / "loop" / "grpo_rounds.yaml"


def run_rounds(model: Path, tmp: Path, *extra: str) -> Path:
    proc = recipe("run", RECIPE, "--set", f"model={{source: local, path: {model}}}", *extra, "--root", tmp / "runs",
                  cache=tmp / "cache")
    return run_dir_of(proc.stdout)


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(next(Path(path).glob("*.safetensors"))))


def test_grpo_rounds_with_a_pass_rate_curriculum(trained_model, tmp_path):  # noqa: F811
    run = run_rounds(trained_model, tmp_path)
    st = state(run)
    assert st["status"] == "done"
    summary = json.loads((run / "summary.json").read_text())
    assert [r["Epoch"] for r in summary] == [1, 2]
    previous = trained_model.resolve()
    for epoch, row in zip((1, 2), summary):
        steps = run / "steps" / f"epoch_{epoch}"
        probed = read_jsonl(steps / "pass_rate" / "labels.jsonl")
        kept = read_jsonl(steps / "curriculum" / "rows.jsonl")
        # the curriculum drops exactly the prompts the policy always or never solved
        assert [r["id"] for r in kept] == [r["id"] for r in probed if 0 < r["n_correct"] < r["n_samples"]]
        assert 0 < len(kept) < len(probed)
        assert all(r["n_samples"] == 4 for r in probed)
        job = json.loads((steps / "train" / "step.json").read_text())
        assert job["method"] == "grpo" and job["data"]["path"] == str(steps / "curriculum" / "rows.jsonl")
        assert Path(job["model"]["path"]) == previous  # round N starts from round N-1's policy
        trained = steps / "train" / f"round_{epoch}"
        before, after = weights(previous), weights(trained)
        assert any(not (before[k] == after[k]).all() for k in before), f"round {epoch} changed nothing"
        log = read_jsonl(steps / "train" / "train_log.jsonl")
        assert any("rewards/reward_triviaqa_alias/mean" in r for r in log)
        # evaluated after the round, with the round's policy; the summary row is that evaluation
        evaluated = read_jsonl(run / f"eval_round{epoch}.jsonl")
        assert len(evaluated) == 16
        metrics = json.loads((steps / "evaluate" / "metrics.json").read_text())
        assert metrics["setup"]["model"] == str(trained.resolve())
        assert row["Accuracy"] == pytest.approx(sum(bool(r["correct"]) for r in evaluated) / len(evaluated))
        assert row["Probe pass rate"] == pytest.approx(sum(r["n_correct"] for r in probed) / (4 * len(probed)))
        assert row["Reward"] is not None
        previous = trained.resolve()


def test_grpo_rounds_without_curriculum_and_with_an_empty_one(trained_model, tmp_path):  # noqa: F811
    run = run_rounds(trained_model, tmp_path, "--set", "vars.curriculum=false", "--set", "loop.epochs=1")
    st = state(run)["steps"]
    assert {st[f"epoch_1/{s}"]["status"] for s in ("probe", "pass_rate", "curriculum")} == {"skipped"}
    job = json.loads((run / "steps" / "epoch_1" / "train" / "step.json").read_text())
    assert job["data"]["rows"] == 16  # the fallback `${steps.curriculum.rows | data.prompts}`: every prompt

    # a curriculum that keeps nothing: the round's training is recorded and skipped, the policy evaluated as it is
    run = run_rounds(trained_model, tmp_path, "--set", "loop.epochs=1", "--set", "loop.steps.curriculum.where=n_correct > n_samples")
    st = state(run)["steps"]
    assert st["epoch_1/train"]["status"] == "skipped" and st["epoch_1/train"]["reason"] == "no rows to train on"
    assert any(e["type"] == "step_skipped" and e["step"] == "epoch_1/train" for e in events(run))
    metrics = json.loads((run / "steps" / "epoch_1" / "evaluate" / "metrics.json").read_text())
    assert metrics["setup"]["model"] == str(trained_model.resolve())
    summary = json.loads((run / "summary.json").read_text())
    assert summary[0]["Reward"] is None and summary[0]["Accuracy"] is not None
