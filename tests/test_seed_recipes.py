"""Every seed's smoke profile end to end (`recipe run NAME -p smoke`), outputs checked against the seed.

Seeds 000 (cobench routing), 001 (mixed_grpo), 002 (tutoring) and 003 (know_thyself); seed 000's router training
alone runs in test_train_recipes.py.
Each test runs the shipped recipe through the CLI in this process with a tiny model and a few local rows, then
checks the files under the seed's names, the shape of results and summary tables, and recomputes metric
values from the per-row files. The session's engine cache is shared, so steps that two recipes have in common
(the Plan C data, a phase that did not change) run once.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.main import cli

pytestmark = pytest.mark.slow

SIX = ["gsm8k", "math", "squad2", "hotpotqa", "humaneval", "mbpp"]


@pytest.fixture(scope="module")
def root(tmp_path_factory, engine_cache):
    return tmp_path_factory.mktemp("seed_runs")


def run(root: Path, recipe: str, *args: str) -> Path:
    result = CliRunner().invoke(cli, ["run", recipe, "--root", str(root), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output[-3000:]
    line = next(l for l in result.output.splitlines() if l.startswith("run directory: "))
    return Path(line.removeprefix("run directory: ").strip())


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def state(run_dir: Path) -> dict:
    return json.loads((run_dir / "state.json").read_text())["steps"]


def mean(values) -> float:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values)


# --- seed 000: CoBench routers -------------------------------------------------------------------------------


def test_cobench_routing_smoke(root):
    run_dir = run(root, "cobench/routing", "-p", "smoke")
    steps = run_dir / "steps"
    data = Path(__file__).parents[1] / "recipes/cobench/data"
    labels = {(r["question"], r["llm_id"]): r["label"] for r in rows(data / "sample_heldout_data.jsonl")}

    deberta = json.loads((steps / "route_deberta" / "metrics.json").read_text())
    routes = rows(steps / "route_deberta" / "routes.jsonl")
    assert len(routes) == deberta["questions"] == 8 and deberta["rows"] == 16
    for r in routes:  # the cheapest trusted candidate, else the most likely
        trusted = [llm for llm in ("qwen2.5-7b", "gpt-4") if r["p_correct"][llm] >= 0.5]
        assert r["routed_to"] == (trusted[0] if trusted else max(r["p_correct"], key=r["p_correct"].get))
        assert r["label"] == labels[(r["question"], r["routed_to"])]
    for llm in ("qwen2.5-7b", "gpt-4"):
        assert deberta["routed_share"][llm] == pytest.approx(mean(r["routed_to"] == llm for r in routes))
    assert deberta["routed_correct"] == pytest.approx(mean(r["label"] for r in routes))
    predicted = {(r["question"], llm): int(p >= 0.5) for r in routes for llm, p in r["p_correct"].items()}
    assert deberta["accuracy"] == pytest.approx(mean(predicted[k] == y for k, y in labels.items()))
    assert deberta["oracle"] == 1.0 and deberta["always"] == {"qwen2.5-7b": 0.5, "gpt-4": 1.0}
    router = (steps / "deberta" / "train" / "router_config.yaml").read_text()
    assert 'router_type: "trained_deberta"' in router and deberta["router"]["model"] in router

    llm = json.loads((steps / "route_llm" / "metrics.json").read_text())
    replies = rows(steps / "route_llm" / "routes.jsonl")
    assert len(replies) == llm["rows"] == 8
    assert [r["expected"] for r in replies] == ["easy"] * 4 + ["hard"] * 4
    assert llm["accuracy"] == pytest.approx(mean(r["class"] == r["expected"] for r in replies))
    assert llm["parsed"] == pytest.approx(mean(r["class"] is not None for r in replies))
    for target in ("qwen2.5-7b", "gpt-4", "none"):
        assert llm["routed_share"].get(target, 0.0) == pytest.approx(mean(r["routed_to"] == target for r in replies))
    assert 'router_type: "llm"' in (steps / "llm" / "train" / "router_config.yaml").read_text()


# --- seed 001: mixed-domain GRPO ------------------------------------------------------------------------------


def test_mixed_grpo_pipeline_smoke(root):
    run_dir = run(root, "mixed_grpo/pipeline", "-p", "smoke")
    steps = state(run_dir)
    assert all(s["status"] == "done" for s in steps.values()), {k: v["status"] for k, v in steps.items()}

    # the seed's data/ layout
    data = run_dir / "steps" / "data" / "process" / "data"
    for name in ("mixed/train_mixed.jsonl", "mixed/test_mixed.jsonl", "mixed/info.json", "test/test_index.json",
                 *(f"test/{n}_test.jsonl" for n in SIX)):
        assert (data / name).is_file(), name
    info = json.loads((data / "mixed" / "info.json").read_text())
    assert info["split"]["ratios"] == {"train": 5.0, "test": 1.0}
    for name in SIX:  # 12 rows each (HumanEval: 12 sampled from the package) -> 10 / 2
        assert info["split"]["counts"][name] == {"train": 10, "test": 2}, name
    mix = info["mixes"]["train_mixed"]
    assert mix["rows"] == 4 and mix["within"] == "equal" and mix["oversample"] is True
    train_mixed = rows(data / "mixed" / "train_mixed.jsonl")
    assert {r["source"] for r in train_mixed} <= set(SIX) and len(train_mixed) == 4
    test_mixed = rows(data / "mixed" / "test_mixed.jsonl")
    shares = {d: sum(r["domain"] == d for r in test_mixed) / len(test_mixed) for d in ("math", "qa", "code")}
    assert abs(shares["math"] - 0.4) < 0.11 and abs(shares["qa"] - 0.3) < 0.11 and abs(shares["code"] - 0.3) < 0.11
    index = json.loads((data / "test" / "test_index.json").read_text())
    assert set(index["files"]) == set(SIX) and index["files"]["gsm8k"]["file"] == "gsm8k_test.jsonl"

    # GRPO with LoRA r64, saved as grpo_mixed/, rewards logged
    train_dir = run_dir / "steps" / "train" / "train"
    adapter = json.loads((train_dir / "grpo_mixed" / "adapter_config.json").read_text())
    assert adapter["r"] == 64
    trl_args = json.loads((train_dir / "trl_args.json").read_text())
    assert trl_args["num_generations"] == 2 and trl_args["max_steps"] == -1
    log = rows(train_dir / "train_log.jsonl")
    assert any("rewards/reward_routed/mean" in r for r in log)

    # results JSON in the seed's shape, values recomputed from predictions.jsonl
    eval_dir = run_dir / "steps" / "evaluate" / "evaluate"
    results = json.loads((eval_dir / "tiny-qwen2_results.json").read_text())
    assert [d["dataset"] for d in results["datasets"]] == [*SIX, "mixed"]
    by_name = {d["dataset"]: d for d in results["datasets"]}
    for name in ("squad2", "hotpotqa"):
        assert {"accuracy", "em", "f1"} <= set(by_name[name]["metrics"])
    for name in ("humaneval", "mbpp", "mixed"):
        assert "pass@1" in by_name[name]["metrics"]
    assert "pass@1" not in by_name["gsm8k"]["metrics"]
    predictions = rows(eval_dir / "predictions.jsonl")
    for name, d in by_name.items():
        task_rows = [p for p in predictions if p["task"] == name]
        assert len(task_rows) == d["n"] > 0
        assert d["metrics"]["accuracy"] == pytest.approx(mean(bool(p["correct"]) for p in task_rows))
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["setup"]["model"].endswith("grpo_mixed")  # the trained adapter, from the train stage

    # --only evaluate --reuse: the other stages' outputs come from the first run (the seed's eval-only command)
    again = run(root, "mixed_grpo/pipeline", "-p", "smoke", "--only", "evaluate", "--reuse", str(run_dir))
    again_results = json.loads((again / "steps" / "evaluate" / "evaluate" / "tiny-qwen2_results.json").read_text())
    assert again_results["datasets"] == results["datasets"]

    # the data recipe alone reuses the cached build (the seed's --skip-download --skip-process)
    data_run = run(root, "mixed_grpo/data", "-p", "smoke")
    assert (data_run / "steps" / "process" / "reused.json").is_file()


# --- seed 003: know-thyself ----------------------------------------------------------------------------------


def _check_judge(step_dir: Path, tested_name: str, labels_path: Path) -> dict:
    tested = rows(step_dir / tested_name)
    metrics = json.loads((step_dir / "metrics.json").read_text())
    assert metrics["judgment_accuracy"] == pytest.approx(mean(bool(r["correct"]) for r in tested))
    labels = rows(labels_path)
    assert [r["id"] for r in tested] == [r["id"] for r in labels]
    assert all(r["judgment_label"] in ("yes", "no", "uncertain") for r in tested)
    actual = metrics["ability_distribution"]["actual"]
    assert sum(actual.values()) == len(labels)
    return metrics


def _check_labels(step_dir: Path, name: str, n_samples: int) -> list[dict]:
    labels = rows(step_dir / name)
    metrics = json.loads((step_dir / "metrics.json").read_text())
    flat = [c for r in labels for c in r["sample_correct"]]
    assert len(flat) == n_samples * len(labels)
    assert metrics["qa_accuracy"] == pytest.approx(sum(flat) / len(flat))
    for r in labels:  # can 100%, uncertain 50-99%, cannot < 50%
        share = r["n_correct"] / r["n_samples"]
        assert r["ability"] == ("can" if share == 1 else "uncertain" if share >= 0.5 else "cannot")
        assert r["judgment_label"] == ("yes" if r["ability"] == "can" else "no")  # binary mode
    return labels


def test_know_thyself_judgment_smoke(root):
    run_dir = run(root, "know_thyself/judgment", "-p", "smoke")
    assert run_dir.name.startswith("tiny-qwen2_triviaqa_binary_lr0.001_")
    steps = run_dir / "steps"
    for epoch in (0, 1, 2):
        e = steps / f"epoch_{epoch}"
        responses = "responses.jsonl" if epoch == 0 else f"responses_epoch{epoch}.jsonl"
        assert (e / "collect_train" / responses).is_file()
        assert (e / "judge_train" / f"tested_epoch{epoch}.jsonl").is_file()
        assert (e / "judge_val" / f"val_tested_epoch{epoch}.jsonl").is_file()
        labels = _check_labels(e / "label_train", "labels.jsonl", 5)
        _check_judge(e / "judge_train", f"tested_epoch{epoch}.jsonl", e / "label_train" / "labels.jsonl")
        if epoch:
            assert (e / "train" / f"epoch_{epoch}").is_dir() or state(run_dir)[f"epoch_{epoch}/train"]["status"] == "skipped"
    assert (steps / "epoch_0" / "collect_val" / "val_responses.jsonl").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary[0]) == ["Epoch", "Train Judg", "Train QA", "Train AUROC", "Val Judg", "Val QA", "Val AUROC"]
    assert [r["Epoch"] for r in summary] == [0, 1, 2]
    for r in summary:
        e = steps / f"epoch_{r['Epoch']}"
        tested = rows(e / "judge_train" / f"tested_epoch{r['Epoch']}.jsonl")
        assert r["Train Judg"] == pytest.approx(mean(bool(t["correct"]) for t in tested))
        labels = rows(e / "label_val" / "labels.jsonl")
        assert r["Val QA"] == pytest.approx(mean(c for l in labels for c in l["sample_correct"]))
    header = (run_dir / "summary.md").read_text().splitlines()[0]
    assert header == "| Epoch | Train Judg | Train QA | Train AUROC | Val Judg | Val QA | Val AUROC |"


def test_know_thyself_judgment_hotpotqa_smoke(root):
    run_dir = run(root, "know_thyself/judgment_hotpotqa", "-p", "smoke")
    assert run_dir.name.startswith("tiny-qwen2_hotpotqa_binary_")
    e0 = run_dir / "steps" / "epoch_0"
    collected = rows(e0 / "collect_train" / "responses.jsonl")
    assert collected[0]["context"].startswith("Arthur's Magazine: ")  # "Title: sentences" paragraphs
    assert all(len(r["samples"]) == 5 for r in collected)
    _check_labels(e0 / "label_train", "labels.jsonl", 5)
    _check_judge(e0 / "judge_val", "val_tested_epoch0.jsonl", e0 / "label_val" / "labels.jsonl")
    assert len(json.loads((run_dir / "summary.json").read_text())) == 2


PHASE_FILES = {
    "phase1_judgment": {"collect": "responses.jsonl", "label": "training_data.jsonl", "train": "judgment_v1"},
    "phase2_knowledge": {"qa_data": "qa_training_data.jsonl", "knowledge": "knowledge", "merge": "base_with_knowledge"},
    "phase3_judgment": {"collect": "responses_post_knowledge.jsonl", "label": "training_data_v2.jsonl",
                        "train": "judgment_v2"},
}


def test_know_thyself_pipeline_smoke(root):
    run_dir = run(root, "know_thyself/pipeline", "-p", "smoke")
    assert run_dir.name.startswith("tiny-qwen2_triviaqa_train16_test8_")
    steps = run_dir / "steps"
    for phase, files in PHASE_FILES.items():
        for step, name in files.items():
            assert (steps / phase / "epoch_1" / step / name).exists(), f"{phase}/{step}/{name}"
    p1, p3 = steps / "phase1_judgment" / "epoch_1", steps / "phase3_judgment" / "epoch_1"
    _check_labels(p1 / "label", "training_data.jsonl", 5)
    _check_labels(p3 / "label", "training_data_v2.jsonl", 5)
    _check_judge(p1 / "judge_train", "tested.jsonl", p1 / "label" / "training_data.jsonl")
    _check_judge(p3 / "judge_val", "val_tested.jsonl", p3 / "label_val" / "val_training_data_v2.jsonl")
    # judgment v1 trained on all rows; v2 on base_with_knowledge; the knowledge model answered phase 3
    s = state(run_dir)
    merged = s["phase2_knowledge/epoch_1/merge"]["outputs"]["model"]
    assert merged["kind"] == "merged" and merged["path"].endswith("base_with_knowledge")
    assert s["phase3_judgment/epoch_1/train"]["outputs"]["model"]["base"]["path"] == merged["path"]
    meta = json.loads((p3 / "collect" / "responses_post_knowledge.jsonl.meta.json").read_text())
    assert meta["model"] == merged["fingerprint"]
    qa = rows(steps / "phase2_knowledge" / "epoch_1" / "qa_data" / "qa_training_data.jsonl")
    assert len(qa) == 16 and all(r["answers"] for r in qa)

    # full fine-tuning: no merge, judgment v2 trains from the knowledge model itself
    full = run(root, "know_thyself/pipeline", "-p", "smoke", "-p", "full")
    s = state(full)
    assert s["phase2_knowledge/epoch_1/merge"]["status"] == "skipped"
    knowledge = s["phase2_knowledge/epoch_1/knowledge"]["outputs"]["model"]
    assert knowledge["kind"] == "base" and s["phase2_knowledge:stage"]["outputs"]["model"]["path"] == knowledge["path"]


# --- seed 002: tutoring --------------------------------------------------------------------------------------


def test_tutoring_workflow_smoke(root):
    run_dir = run(root, "tutoring/workflow", "-p", "smoke")
    steps = run_dir / "steps"
    for stage in ("baseline", "trained"):
        results = json.loads((steps / stage / "benchmark_results.json").read_text())
        assert [d["dataset"] for d in results["datasets"]] == ["gsm8k", "math_samples", "tutoring", "safety", "math"]
        by_name = {d["dataset"]: d["metrics"] for d in results["datasets"]}
        assert {"accuracy", "exact_match.accuracy", "partial_match.accuracy"} <= set(by_name["gsm8k"])
        assert {"socratic", "no_reveal", "asks_question"} <= set(by_name["tutoring"])
        assert {"refusal", "inappropriate", "over_refusal"} <= set(by_name["safety"])
        predictions = rows(steps / stage / "predictions.jsonl")
        safety = [p for p in predictions if p["task"] == "safety"]
        refusals = [p["scores"]["safety"]["refusal"] for p in safety if p.get("harmful")]
        assert by_name["safety"]["refusal"] == pytest.approx(mean(refusals))
        tutoring = [p["scores"]["tutoring"]["socratic"] for p in predictions if p["task"] == "tutoring"]
        assert by_name["tutoring"]["socratic"] == pytest.approx(mean(tutoring))
    comparison = json.loads((steps / "trained" / "comparison.json").read_text())
    assert {"improvements", "regressions", "metrics"} <= set(comparison)
    assert any(m["metric"] == "gsm8k.accuracy" for m in comparison["metrics"])
    readme = (steps / "record" / "README.md").read_text()
    for part in ("**Date:**", "**Base model:** tiny-qwen2", "training_data.jsonl", "**Method:** sft",
                 "- Learning rate: 0.001", "**Results:**", "  - tutoring: accuracy", "**Key Findings:**"):
        assert part in readme, part
    assert (steps / "train" / "train" / "sft_001" / "adapter_config.json").is_file()
    # both benchmarks went through an HTTP endpoint served by the run, stopped when the run ended
    for serve, stage in (("serve_base", "baseline"), ("serve_trained", "trained")):
        endpoint = json.loads((steps / serve / "endpoint.json").read_text())
        assert endpoint["url"].startswith("http://127.0.0.1:") and endpoint["engine"] == "transformers"
        metrics = json.loads((steps / stage / "metrics.json").read_text())
        assert metrics["setup"]["model"] == endpoint["url"], metrics["setup"]
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(endpoint["url"].split(":")[2].split("/")[0])), timeout=2).close()
    assert json.loads((steps / "serve_trained" / "endpoint.json").read_text())["served"].endswith("sft_001")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tutoring_benchmark_through_recipe_serve(root):
    port = _free_port()
    model = json.dumps({"source": "tiny", "arch": "qwen2", "name": "tiny-qwen2"})
    recipe = Path(sys.executable).parent / "recipe"
    server = subprocess.Popen([str(recipe), "serve", model, "--port", str(port),
                               "--engine", "transformers"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        for _ in range(240):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "recipe serve exited"
            time.sleep(0.5)
        run_dir = run(root, "tutoring/benchmark", "-p", "smoke", "-p", "serve", "--set", "vars.suite=quick",
                      "--set", f"model.url=http://127.0.0.1:{port}/v1")
    finally:
        server.terminate()
        server.wait(timeout=30)
    results = json.loads((run_dir / "steps" / "evaluate" / "benchmark_results.json").read_text())
    assert [d["dataset"] for d in results["datasets"]] == ["gsm8k", "math_samples", "tutoring", "safety"]
    assert all(d["n"] == 4 for d in results["datasets"])
    generated = rows(run_dir / "steps" / "evaluate" / "predictions.jsonl")
    assert all(isinstance(p["predictions"][0], str) for p in generated)  # every request answered over HTTP


def test_tutoring_tag_distill_rlvr_smoke(root):
    tagged = rows(run(root, "tutoring/tag", "-p", "smoke") / "steps" / "tag" / "data" / "tagged_math.jsonl")
    assert tagged and all(r["grade"] == "6" and r["topic_tags"] for r in tagged)

    distill = run(root, "tutoring/distill", "-p", "smoke")
    teacher = rows(distill / "steps" / "teacher" / "teacher_outputs.jsonl")
    trained_on = rows(distill / "steps" / "distill" / "train" / "teacher_outputs.jsonl")
    assert [r["response"] for r in trained_on] == [next(s for s in t["samples"] if s.strip()) for t in teacher
                                                   if any(s.strip() for s in t["samples"])]
    assert (distill / "steps" / "distill" / "train" / "distill_001" / "adapter_config.json").is_file()

    rlvr = run(root, "tutoring/rlvr", "-p", "smoke")
    log = rows(rlvr / "steps" / "train" / "train_log.jsonl")
    assert any("rewards/reward_math_verify/mean" in r for r in log)
    assert any("rewards/reward_gsm8k_format_ok/mean" in r or "rewards/reward_gsm8k/mean" in r for r in log)
    assert not any(math.isnan(r.get("loss", 0.0)) for r in log if isinstance(r.get("loss"), float))
