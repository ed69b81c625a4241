"""The collect step: n samples per row, resume after a crash without duplicates, data-parallel workers, failures."""

from __future__ import annotations

import json

import pytest

from engine.plan.context import StepContext
from engine.runs.atomic import read_jsonl
from generate_support import ScriptedServer, chat_reply, model_of, prompt_key

pytestmark = pytest.mark.slow

TEMPLATE = {"fields": ["question"], "messages": [{"role": "system", "content": "Answer briefly."},
                                                 {"role": "user", "content": "Q: {{ question }}"}]}


@pytest.fixture()
def data(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"id": f"q{i}", "question": "word " * (i % 4) + f"number {i}?", "answers": [str(i)]} for i in range(10)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"type": "Dataset", "path": str(path), "rows": len(rows), "fingerprint": "test-rows"}


@pytest.fixture(autouse=True)
def no_generation_cache(monkeypatch, engine_cache):
    monkeypatch.setenv("RECIPE_ENGINE_GENERATION_CACHE", "0")  # resumed rows must really be regenerated


def context(step_dir, model, data, resources=None, **params):
    params = {"n": 3, "temperature": 0.8, "max_new_tokens": 6, "batch_size": 3, "generator": "transformers",
              "template": TEMPLATE, **params}
    step_dir.mkdir(parents=True, exist_ok=True)
    return StepContext(step_id="collect", step_dir=step_dir, step={"use": "collect", "params": params},
                       inputs={"model": model, "data": data}, plan={"seed": 0}, run_dir=step_dir.parent,
                       recipe_dir=step_dir.parent, seed=1234, resources=resources if resources is not None else {})


def run_step(ctx):
    from engine.plan.steps.collect import run

    return run(ctx)


def test_collect_writes_n_samples_per_row_in_order(tmp_path, tiny_qwen2_dir, data):
    ctx = context(tmp_path / "a", model_of(tiny_qwen2_dir), data, limit=7, save="answers.jsonl")
    ctx.save_name = "answers.jsonl"
    out = run_step(ctx)["samples"]
    assert out["type"] == "Samples" and out["rows"] == 7 and out["path"].endswith("answers.jsonl")
    rows = read_jsonl(out["path"])
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(7)]
    for r in rows:
        assert r["answers"] and len(r["samples"]) == 3 and r["finish_reasons"] == ["length"] * 3
        assert r["errors"] == [None, None, None]
    summary = json.loads((tmp_path / "a" / "collect.json").read_text())
    assert summary["rows"] == 7 and summary["failed_requests"] == 0 and summary["generator"] == "transformers"


def test_resume_after_a_crash_is_identical_without_duplicates(tmp_path, tiny_qwen2_dir, data, monkeypatch):
    import engine.plan.steps.collect as collect

    model = model_of(tiny_qwen2_dir)
    reference = read_jsonl(run_step(context(tmp_path / "ref", model, data))["samples"]["path"])

    real_append = collect.append_jsonl
    written = []

    def crash_after_four(path, record):
        if len(written) == 4:
            with open(path, "ab") as f:  # a kill -9 in the middle of a write leaves a torn line
                f.write(json.dumps(record).encode()[:25])
            raise KeyboardInterrupt("killed")
        written.append(record["id"])
        real_append(path, record)

    monkeypatch.setattr(collect, "append_jsonl", crash_after_four)
    ctx = context(tmp_path / "crash", model, data)
    with pytest.raises(KeyboardInterrupt):
        run_step(ctx)
    monkeypatch.setattr(collect, "append_jsonl", real_append)

    seen = []
    from engine.generate.transformers_gen import TransformersGenerator

    original = TransformersGenerator.generate
    monkeypatch.setattr(TransformersGenerator, "generate", lambda self, reqs: seen.extend(r.id for r in reqs) or original(self, reqs))
    resumed = read_jsonl(run_step(context(tmp_path / "crash", model, data))["samples"]["path"])
    assert seen == [f"q{i}" for i in range(4, 10)]  # only the unfinished rows were generated again
    assert resumed == reference
    assert len({r["id"] for r in resumed}) == len(resumed) == 10
    summary = json.loads((tmp_path / "crash" / "collect.json").read_text())
    assert summary["resumed_at"] == 4


def test_changed_settings_start_over(tmp_path, tiny_qwen2_dir, data):
    model = model_of(tiny_qwen2_dir)
    run_step(context(tmp_path / "s", model, data, limit=3))
    rows = read_jsonl(run_step(context(tmp_path / "s", model, data, limit=3, n=2))["samples"]["path"])
    assert len(rows) == 3 and all(len(r["samples"]) == 2 for r in rows)


def test_two_workers_merge_in_input_order(tmp_path, tiny_qwen2_dir, data):
    model = model_of(tiny_qwen2_dir)
    one = read_jsonl(run_step(context(tmp_path / "w1", model, data))["samples"]["path"])
    two = read_jsonl(run_step(context(tmp_path / "w2", model, data, workers=2))["samples"]["path"])
    assert [r["id"] for r in two] == [f"q{i}" for i in range(10)]
    assert two == one
    assert json.loads((tmp_path / "w2" / "collect.json").read_text())["workers"] == 2


def test_endpoint_failures_are_recorded_and_counted(tmp_path, data):
    def behave(server, path, body, attempt):
        if "number 3?" in prompt_key(body) or "number 6?" in prompt_key(body):
            return 500, "boom", {}
        return 200, chat_reply([f"ans{i}" for i in range(body["n"])]), {}

    server = ScriptedServer(behave)
    try:
        model = {"type": "Endpoint", "url": server.url + "/v1", "model": "m",
                 "source": {"source": "endpoint", "url": server.url + "/v1", "model": "m", "retries": 1}}
        ctx = context(tmp_path / "e", model, data, generator="auto")
        rows = read_jsonl(run_step(ctx)["samples"]["path"])
    finally:
        server.close()
    assert len(rows) == 10
    failed = [r for r in rows if r["errors"][0]]
    assert [r["id"] for r in failed] == ["q3", "q6"]
    assert failed[0]["samples"] == [None] * 3 and failed[0]["finish_reasons"] == ["error"] * 3
    assert "HTTP 500" in failed[0]["errors"][0]
    assert rows[0]["samples"] == ["ans0", "ans1", "ans2"]
    summary = json.loads((tmp_path / "e" / "collect.json").read_text())
    assert summary["failed_requests"] == 2 and summary["generator"] == "endpoint"


def test_model_is_loaded_once_across_steps(tmp_path, tiny_qwen2_dir, data, monkeypatch):
    import engine.generate.transformers_gen as tg

    loads = []
    original = tg.load_causal_lm
    monkeypatch.setattr(tg, "load_causal_lm", lambda *a, **k: loads.append(1) or original(*a, **k))
    resources: dict = {}
    model = model_of(tiny_qwen2_dir, fingerprint="test:once")
    run_step(context(tmp_path / "one", model, data, resources=resources, limit=2))
    run_step(context(tmp_path / "two", model, data, resources=resources, limit=2, n=1))
    assert len(loads) == 1


def test_missing_template_field_is_a_clear_error(tmp_path, tiny_qwen2_dir, data):
    from engine.recipe.errors import EngineError

    bad = {"fields": ["prompt"], "messages": [{"role": "user", "content": "{{ prompt }}"}]}
    with pytest.raises(EngineError, match="row 0 .*prompt"):
        run_step(context(tmp_path / "bad", model_of(tiny_qwen2_dir), data, template=bad))
