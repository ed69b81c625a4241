"""`recipe compare RUN_A RUN_B` (comparison.json + table, exit codes) and `recipe diff RUN_A RUN_B` (recipe, lock and
metric differences side by side) on real smoke runs of the quickstart and on synthetic runs with known answers."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from engine.cli.main import cli
from run_support import create_run, done, scored_evaluation

COMPARISON_KEYS = {"baseline", "candidate", "metrics", "improvements", "regressions", "within_noise", "flipped", "warnings", "runs"}


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def two_quickstart_runs(tmp_path_factory, engine_cache):
    """The quickstart smoke profile twice; B evaluates 3 items after training instead of 4 (train and the first
    evaluation are reused from A through the artifact store)."""
    root = tmp_path_factory.mktemp("runs")
    assert invoke("run", "quickstart", "-p", "smoke", "--root", root / "a").exit_code == 0
    result = invoke("run", "quickstart", "-p", "smoke", "--root", root / "b", "--set", "stages.after.limit=3")
    assert result.exit_code == 0, result.output
    (a,) = (root / "a" / "quickstart").iterdir()
    (b,) = (root / "b" / "quickstart").iterdir()
    return a, b


def test_compare_two_real_runs(two_quickstart_runs, tmp_path):
    a, b = two_quickstart_runs
    out = tmp_path / "cmp.json"
    result = invoke("compare", a, b, "-o", out)
    assert result.exit_code == 0, result.output
    comparison = json.loads(out.read_text())
    assert set(comparison) == COMPARISON_KEYS
    assert comparison["runs"]["baseline"] == {"run_dir": str(a.resolve()), "step": "after"}
    row = next(r for r in comparison["metrics"] if r["metric"] == "arithmetic.accuracy")
    assert set(row) >= {"metric", "baseline", "candidate", "delta", "ci", "verdict", "n_shared"}
    assert row["n_shared"] == 3 and row["verdict"] in ("improvement", "regression", "within noise")
    lines = result.output.splitlines()
    assert lines[0] == f"# {a.name}:after -> {b.name}:after"
    assert lines[1].split("\t") == ["metric", "baseline", "candidate", "delta", "95% CI (paired)", "verdict"]
    assert f"comparison: {out}" in result.output
    before = invoke("compare", a, b, "--step", "before", "-o", tmp_path / "before.json", "--format", "json")
    assert json.loads(before.output)["runs"]["candidate"]["step"] == "before"


def test_diff_two_real_runs(two_quickstart_runs):
    a, b = two_quickstart_runs
    result = invoke("diff", a, b, "--format", "json")
    assert result.exit_code == 1  # different
    diff = json.loads(result.output)
    assert set(diff) == {"a", "b", "recipe", "runs", "lock", "metrics", "different"}
    assert diff["recipe"] == [{"op": "changed", "path": "stages.after.limit", "old": 4, "new": 3}]
    assert diff["runs"]["a"]["name"] == "quickstart" and diff["runs"]["b"]["status"] == "done"
    assert all(set(m) == {"metric", "a", "b", "delta"} for m in diff["metrics"])
    assert not any(m["metric"].endswith(("_runtime", "_per_second")) for m in diff["metrics"])
    text = invoke("diff", a, b).output
    assert text.startswith(f"A: {a}  (quickstart, recipe ")
    assert "  ~ stages.after.limit: 4 -> 3" in text
    same = invoke("diff", a, a)
    assert same.exit_code == 0
    assert "recipes: same" in same.output and "lock: same" in same.output and "metrics: same" in same.output


def _eval_run(root, name, correct, generator="transformers"):
    run = create_run(root, name, {"type": "steps", "order": ["eval"], "steps": {"eval": {"use": "evaluate"}}}, kind="eval")
    outputs = scored_evaluation(run, "eval", {"math": correct})
    outputs["metrics"]["values"]["setup"]["generator"] = generator
    done(run, "eval", "evaluate", outputs)
    run.write_metrics({"eval": {"metrics": outputs["metrics"]["values"]}})
    run.state.set_run_status("done")
    return run.path


def test_compare_verdicts_flips_and_exit_codes(tmp_path):
    worse = _eval_run(tmp_path, "worse", {f"q{i}": int(i < 2) for i in range(20)})
    better = _eval_run(tmp_path, "better", {f"q{i}": int(i >= 1) for i in range(20)}, generator="vllm")
    out = tmp_path / "c.json"
    up = invoke("compare", worse, better, "-o", out, "--fail-on-regression")
    assert up.exit_code == 0, up.output
    comparison = json.loads(out.read_text())
    assert "math.accuracy" in comparison["improvements"] and comparison["regressions"] == []
    assert comparison["flipped"]["math.accuracy"] == {"right_to_wrong": ["q0"], "wrong_to_right": [f"q{i}" for i in range(2, 20)]}
    assert "flipped on math.accuracy: 18 wrong→right" in up.output and "1 right→wrong (q0)" in up.output
    assert "warning: the evaluations differ in generator ('transformers' vs 'vllm')" in up.output
    down = invoke("compare", better, worse, "-o", out, "--fail-on-regression")
    assert down.exit_code == 1 and "math.accuracy" in json.loads(out.read_text())["regressions"]
    assert invoke("compare", better, worse, "-o", out).exit_code == 0  # a regression is a result, not an error


def test_compare_errors_exit_1_with_a_message(tmp_path):
    run = _eval_run(tmp_path, "one", {"q1": 1, "q2": 0})
    bad_step = invoke("compare", run, run, "--step", "evl", "-o", tmp_path / "x.json")
    assert bad_step.exit_code == 1 and "did you mean 'eval'" in bad_step.output
    empty = create_run(tmp_path, "empty", {"type": "steps", "order": [], "steps": {}}, kind="train").path
    none = invoke("compare", run, empty, "-o", tmp_path / "x.json")
    assert none.exit_code == 1 and "no completed evaluation" in none.output
    assert invoke("compare", run, tmp_path, "-o", tmp_path / "x.json").exit_code == 1  # not a run directory
    assert not (tmp_path / "x.json").exists()
