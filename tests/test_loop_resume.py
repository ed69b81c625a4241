"""Crash safety, the step cache and stage selection with the real steps (no fakes), through the `recipe` CLI.

- kill -9 of `recipe run` mid-collect (after the first window of rows is in the samples file) and of the
  `recipe resume` that follows it mid-train, then `recipe resume` to the end: every JSONL output is byte-identical
  to an uninterrupted run's, the trained weights allclose, no row duplicated, every step done once. The killed run
  collects with `workers: 2` (data-parallel processes, killed with it), the uninterrupted one with one process.
- Two runs differing only in the learning rate: the second reuses the baseline epoch (events `step_reused`) and
  trains again.
- `--only / --from / --skip` (+ `--reuse`) on a small pipeline of real steps: collect → label → train → evaluate.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from collections import Counter
from pathlib import Path
from typing import Optional

import pytest

from loop_support import (count_lines, events, read_jsonl, recipe, recipe_argv, recipe_env, run_dir_of,
                          smoke_judgment_args, state, trained_model, wait_for)  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

ROWS = 48          # train questions: the 16 smoke ones three times over (distinct ids)
WINDOW = 32        # collect appends a window of max(4 * batch_size * workers, 32) rows at a time: 32 here


def many_questions(path: Path) -> Path:
    """ROWS TriviaQA-schema rows: the smoke train questions repeated with distinct question ids."""
    raw = [json.loads(line) for line in (Path(__file__).parents[1] / "recipes/know_thyself/data/smoke_trivia.jsonl").read_text().splitlines()]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(ROWS):
            row = dict(raw[i % len(raw)])
            row["question_id"] = f"{row['question_id']}_r{i // len(raw)}"
            f.write(json.dumps(row) + "\n")
    return path


def loop_args(model: Path, data: Path, *extra: str) -> list[str]:
    return [*smoke_judgment_args(model), "--set", f"data.sources.train.path={data}", "--unset", "data.sources.train.sample",
            "--set", "loop.epochs=1", "--set", "loop.steps.collect_train.batch_size=4",
            "--set", "loop.steps.train.epochs=3", *extra]


@pytest.fixture(scope="module")
def setup(trained_model, tmp_path_factory):  # noqa: F811
    work = tmp_path_factory.mktemp("resume")
    data = many_questions(work / "questions.jsonl")
    reference = recipe("run", *loop_args(trained_model, data), "--root", work / "reference", cache=work / "cache_reference")
    return {"work": work, "data": data, "model": trained_model, "reference": run_dir_of(reference.stdout)}


def start(args: list, work: Path, cache: Path, log: str) -> subprocess.Popen:
    with open(work / log, "w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(recipe_argv(*args), env=recipe_env(cache), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill9(proc: subprocess.Popen, log: Path) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole session: the CLI and the collect workers it started
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"it ended by itself ({proc.returncode}):\n{log.read_text()[-3000:]}"


def the_run(root: Path) -> Optional[Path]:
    runs = [p for p in root.glob("*/*") if (p / "state.json").is_file()]
    return runs[0] if len(runs) == 1 else None


def jsonl_files(run: Path) -> dict[str, Path]:
    return {str(p.relative_to(run)): p for p in sorted((run / "steps").rglob("*.jsonl"))
            if "trainer" not in p.parts and p.name not in ("train_log.jsonl",)}


def test_kill_mid_collect_and_mid_train_then_resume_matches_an_uninterrupted_run(setup):
    work, cache, root = setup["work"], setup["work"] / "cache_killed", setup["work"] / "killed"
    # the killed run collects with 2 worker processes, the reference with one: the results must not differ
    args = ["run", *loop_args(setup["model"], setup["data"], "--set", "loop.steps.collect_train.workers=2"), "--root", root]

    # 1. kill -9 while collecting: the first window of rows is in the file, the second is being generated
    proc = start(args, work, cache, "run.log")
    wait_for(lambda: the_run(root) is not None, timeout=120, what="the run directory")
    run = the_run(root)
    samples = run / "steps" / "epoch_0" / "collect_train" / "responses.jsonl"
    wait_for(lambda: count_lines(samples) >= WINDOW or proc.poll() is not None, timeout=300, poll=0.01,
             what=f"{WINDOW} rows in {samples}")
    kill9(proc, work / "run.log")
    assert WINDOW <= count_lines(samples) < ROWS
    assert state(run)["steps"]["epoch_0/collect_train"]["status"] == "running"

    # 2. resume, and kill -9 again while training epoch 1
    proc = start(["resume", run], work, cache, "resume1.log")
    train_log = run / "steps" / "epoch_1" / "train" / "train_log.jsonl"
    wait_for(lambda: count_lines(train_log) >= 1 or proc.poll() is not None, timeout=600, poll=0.01,
             what="the first logged training step")
    kill9(proc, work / "resume1.log")
    st = state(run)
    assert st["steps"]["epoch_1/train"]["status"] == "running", (work / "resume1.log").read_text()[-2000:]
    assert st["steps"]["epoch_0/collect_train"]["status"] == "done"
    resumed = [e for e in events(run) if e["type"] == "collect_resumed" and e["step"] == "epoch_0/collect_train"]
    assert resumed and resumed[0]["rows_done"] >= WINDOW

    # 3. resume to the end
    recipe("resume", run, cache=cache)
    assert state(run)["status"] == "done"

    reference = setup["reference"]
    mine, theirs = jsonl_files(run), jsonl_files(reference)
    assert sorted(mine) == sorted(theirs)
    for name, path in mine.items():
        rows = read_jsonl(path)
        ids = [r.get("id") for r in rows]
        assert len(ids) == len(set(ids)), f"{name}: duplicated rows"
        assert path.read_bytes() == theirs[name].read_bytes(), f"{name} differs from the uninterrupted run"
    assert len(read_jsonl(run / "responses.jsonl")) == ROWS
    collected = json.loads((run / "steps" / "epoch_0" / "collect_train" / "collect.json").read_text())
    assert collected["workers"] == 2 and collected["resumed_at"] >= WINDOW

    import torch
    from safetensors.torch import load_file

    a = load_file(str(next((run / "epoch_1").glob("*.safetensors"))))
    b = load_file(str(next((reference / "epoch_1").glob("*.safetensors"))))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key

    # every step finished exactly once; nothing ran twice after it was done
    done = Counter(e["step"] for e in events(run) if e["type"] == "step_done")
    assert done and max(done.values()) == 1, done
    assert set(done) == {s for s, i in state(run)["steps"].items() if i["status"] == "done"}


def test_a_second_run_with_another_learning_rate_reuses_the_baseline(setup):
    """The reference run's cache: only what depends on the learning rate is computed again."""
    root = setup["work"] / "other_lr"
    proc = recipe("run", *loop_args(setup["model"], setup["data"], "--set", "vars.lr=5.0e-4"), "--root", root,
                  cache=setup["work"] / "cache_reference")
    run = run_dir_of(proc.stdout)
    log = events(run)
    reused = {e["step"] for e in log if e["type"] == "step_reused"}
    started = {e["step"] for e in log if e["type"] == "step_started"}
    baseline = {f"epoch_0/{s}" for s in ("collect_train", "label_train", "judge_train", "collect_val", "label_val", "judge_val")}
    assert baseline <= reused and not baseline & started
    assert "epoch_1/select" in reused  # same rows to train on
    assert {"epoch_1/train", "epoch_1/collect_train"} <= started
    assert (run / "responses.jsonl").read_bytes() == (setup["reference"] / "responses.jsonl").read_bytes()
    reused_from = json.loads((run / "steps" / "epoch_0" / "collect_train" / "reused.json").read_text())
    assert reused_from["from_run"] == str(setup["reference"])


PIPELINE = """\
recipe: 1
kind: pipeline
name: loop-stages
model: {{source: local, path: {model}}}
data:
  sources:
    questions: {{source: jsonl, path: {data}, adapter: triviaqa, sample: 6}}
launch: {{gpus: 0}}
tracking: {{backends: [none]}}
stages:
  collect: {{use: collect, model: "${{model}}", data: "${{data.questions}}", template: qa/closed_book, n: 2, max_new_tokens: 8}}
  label: {{use: label, samples: "${{stages.collect.samples}}", scorer: triviaqa_alias}}
  train:
    kind: train
    train: {{method: sft, data: "${{stages.label.rows}}", template: qa/closed_book, max_steps: 2, batch_size: 2,
             learning_rate: 1.0e-3}}
    outputs: {{model: "${{steps.train.model}}"}}
  evaluate: {{use: evaluate, model: "${{stages.train.model}}", data: "${{stages.label.rows}}", template: qa/closed_book,
              scorer: triviaqa_alias, max_new_tokens: 8, bootstrap: 0}}
"""


def stage_status(run: Path) -> dict[str, str]:
    return {s: i["status"] for s, i in state(run)["steps"].items()}


def test_only_from_skip_on_a_pipeline_of_real_steps(trained_model, tmp_path):  # noqa: F811
    recipe_file = tmp_path / "pipeline.yaml"
    recipe_file.write_text(textwrap.dedent(PIPELINE.format(model=trained_model, data=Path(__file__).parents[1] / "recipes/know_thyself/data/smoke_trivia.jsonl")))
    cache, root = tmp_path / "cache", tmp_path / "runs"

    full = run_dir_of(recipe("run", recipe_file, "--root", root, cache=cache).stdout)
    assert {s: v for s, v in stage_status(full).items() if not s.endswith(":stage")} == {
        "collect": "done", "label": "done", "train/train": "done", "evaluate": "done"}

    # --only evaluate: the other stages' outputs come from --reuse; nothing but the evaluation runs
    only = run_dir_of(recipe("run", recipe_file, "--root", root, "--no-cache", "--only", "evaluate", "--reuse", full, cache=cache).stdout)
    status = stage_status(only)
    assert status["evaluate"] == "done" and "collect" not in status and "train/train" not in status
    assert {e["stage"] for e in events(only) if e["type"] == "stage_reused"} == {"collect", "label", "train"}
    assert [e["step"] for e in events(only) if e["type"] == "step_started"] == ["evaluate"]
    one = json.loads((only / "steps" / "evaluate" / "metrics.json").read_text())
    two = json.loads((full / "steps" / "evaluate" / "metrics.json").read_text())
    assert one["setup"]["model"] == two["setup"]["model"] and one["accuracy"] == two["accuracy"]

    # --from train without --reuse: train needs label's rows, which nothing provides: a clear error, nothing runs
    failed = recipe("run", recipe_file, "--root", root, "--from", "train", cache=cache, check=False)
    assert failed.returncode != 0
    assert "stage 'train' uses the outputs of stage 'label', which this selection does not run; add --reuse RUN_DIR" \
        in failed.stdout + failed.stderr

    # --from label --reuse: collect reused, the rest run (label, evaluate reused from the cache; train too)
    from_label = run_dir_of(recipe("run", recipe_file, "--root", root, "--from", "label", "--reuse", full, cache=cache).stdout)
    log = events(from_label)
    assert {e["stage"] for e in log if e["type"] == "stage_reused"} == {"collect"}
    assert {e["step"] for e in log if e["type"] in ("step_reused", "step_done")} == {"label", "train/train", "evaluate"}

    # --skip train --reuse: train's model comes from the full run; collect, label and evaluate run
    skip = run_dir_of(recipe("run", recipe_file, "--root", root, "--no-cache", "--skip", "train", "--reuse", full, cache=cache).stdout)
    log = events(skip)
    assert {e["stage"] for e in log if e["type"] == "stage_reused"} == {"train"}
    assert [e["step"] for e in log if e["type"] == "step_started"] == ["collect", "label", "evaluate"]
    assert (skip / "steps" / "collect" / "samples.jsonl").read_bytes() == (full / "steps" / "collect" / "samples.jsonl").read_bytes()


def test_start_epoch_takes_the_earlier_epochs_from_the_reused_run(setup, tmp_path):
    """`loop.start_epoch: 1` (the seed's --start_epoch) with `--reuse`: epoch 0 comes from the earlier run, epoch 1 runs."""
    reference = setup["reference"]
    args = loop_args(setup["model"], setup["data"], "--set", "loop.start_epoch=1")
    cold = recipe("run", *args, "--root", tmp_path / "cold", cache=tmp_path / "empty_cache", check=False)
    assert cold.returncode == 1 and "loop.start_epoch is 1, but step epoch_0/" in cold.stderr, cold.stderr[-2000:]
    assert "Traceback" not in cold.stderr

    out = recipe("run", *args, "--reuse", reference, "--root", tmp_path / "runs", cache=tmp_path / "cache")
    run_dir = run_dir_of(out.stdout)
    reused = {e["step"] for e in events(run_dir) if e["type"] == "step_reused"}
    ran = {e["step"] for e in events(run_dir) if e["type"] == "step_done"}
    done_before = {s for s, info in state(reference)["steps"].items() if s.startswith("epoch_0/") and info["status"] == "done"}
    assert reused == done_before and done_before
    assert ran and all(s.startswith("epoch_1/") for s in ran)
    for step in done_before:  # the reused epoch's files are the reference's, linked
        assert (run_dir / "steps" / step).is_dir()
    assert (run_dir / "responses.jsonl").resolve() == (reference / "responses.jsonl").resolve()
