"""Every training method trains >= 2 steps on a tiny model on CPU: finite loss, changed parameters, written outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from train_support import changed, train_context

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

QA_TEMPLATE = {"fields": ["question"], "messages": [{"role": "user", "content": "{{ question }}"}], "target": "{{ response }}"}
QA_ROWS = [{"id": str(i), "question": f"What is {i} plus {i}?", "answers": [str(2 * i)], "response": f"It is {2 * i}.",
            "domain": "math"} for i in range(8)]
PREF_ROWS = [{"question": f"Say a number bigger than {i}.", "chosen": f"{i + 5}", "rejected": "zero"} for i in range(8)]


def local(path) -> dict:
    return {"source": "local", "path": str(path)}


def state_dict(path, auto="AutoModelForCausalLM"):
    import transformers

    return {k: v.clone() for k, v in getattr(transformers, auto).from_pretrained(path).state_dict().items()}


def check_outputs(ctx, out, *, kind="base", min_steps=2):
    model, metrics = out["model"], out["metrics"]
    assert model["type"] == "Model" and model["kind"] == kind
    assert Path(model["path"]).is_dir()
    assert metrics["values"]["global_step"] >= min_steps
    assert math.isfinite(metrics["values"]["train_loss"])
    saved = json.loads(Path(metrics["path"]).read_text())
    assert saved["global_step"] == metrics["values"]["global_step"]
    log = [json.loads(line) for line in (ctx.step_dir / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses and all(math.isfinite(x) for x in losses)
    events = [e for e in ctx.events.read() if e["type"] == "train_log"]
    assert events and events[0]["step"] == ctx.step_id
    for name in ("step.json", "trl_args.json", "result.json"):
        assert (ctx.step_dir / name).is_file()


COMMON = {"max_steps": 2, "batch_size": 2, "learning_rate": 5e-3, "logging_steps": 1}


@pytest.mark.slow
def test_sft_full_chat_completion_only(tmp_path, tiny_qwen2_dir):
    from engine.plan.steps.train import run

    before = state_dict(tiny_qwen2_dir)
    ctx = train_context(tmp_path, {"method": "sft", "template": QA_TEMPLATE, **COMMON,
                                   "checkpoints": {"every": "steps", "steps": 1, "name": "ckpt-{step}", "retain": 1}},
                        {**local(tiny_qwen2_dir), "chat_template_kwargs": {"enable_thinking": False}}, QA_ROWS, save="epoch_1")
    out = run(ctx)
    check_outputs(ctx, out)
    assert out["model"]["path"].endswith("epoch_1")
    assert out["model"]["source"]["chat_template_kwargs"] == {"enable_thinking": False}  # prompted as its base was
    final = Path(out["model"]["path"])
    assert sorted(p.name for p in final.glob("ckpt-*")) == ["ckpt-2"]  # retain: 1 removed ckpt-1
    assert [c["name"] for c in out["model"]["checkpoints"]] == ["ckpt-2"]
    assert changed(before, out["model"]["path"]) > 0
    args = json.loads((ctx.step_dir / "trl_args.json").read_text())
    assert args["completion_only_loss"] is True and args["use_cpu"] is True


def test_sft_examples_by_format(tiny_qwen2_dir):
    from engine.data.templates import load_template
    from engine.methods.examples import sft_examples
    from engine.methods.job import load_tokenizer

    tok = load_tokenizer({"type": "Model", "kind": "base", "path": str(tiny_qwen2_dir), "source": {}})
    chat = sft_examples(QA_ROWS[:1], load_template(QA_TEMPLATE), "auto", tok)[0]
    assert chat["prompt"] == [{"role": "user", "content": "What is 0 plus 0?"}]
    assert chat["completion"] == [{"role": "assistant", "content": "It is 0."}]
    plain = sft_examples(QA_ROWS[:1], load_template(QA_TEMPLATE), "completion", tok)[0]
    assert plain == {"prompt": "What is 0 plus 0?\n", "completion": "It is 0."}
    alpaca = sft_examples([{"instruction": "Name a colour.", "response": "Blue."}], None, "alpaca", tok)[0]
    assert alpaca["prompt"].rstrip().endswith("### Response:") and "Name a colour." in alpaca["prompt"]
    assert alpaca["completion"] == "Blue."


@pytest.mark.slow
def test_sft_lora_then_merge_equal_logits(tmp_path, tiny_qwen2_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from engine.methods.job import load_model
    from engine.plan.context import StepContext
    from engine.plan.steps.merge import run as merge
    from engine.plan.steps.train import run

    ctx = train_context(tmp_path, {"method": "sft", "template": QA_TEMPLATE, "adapter": {"type": "lora", "r": 4, "alpha": 8},
                                   **COMMON}, local(tiny_qwen2_dir), QA_ROWS)
    out = run(ctx)
    check_outputs(ctx, out, kind="adapter")
    adapter = out["model"]
    assert (Path(adapter["path"]) / "adapter_config.json").is_file()
    assert adapter["base"]["path"] == str(Path(tiny_qwen2_dir).resolve())
    merge_dir = ctx.run_dir / "steps" / "merge"
    merge_dir.mkdir(parents=True)
    mctx = StepContext(step_id="merge", step_dir=merge_dir, step={"use": "merge", "params": {}}, inputs={"model": adapter},
                       plan=ctx.plan, run_dir=ctx.run_dir, recipe_dir=ctx.recipe_dir, seed=0)
    merged = merge(mctx)["model"]
    assert merged["kind"] == "merged" and not (Path(merged["path"]) / "adapter_config.json").exists()
    ids = torch.tensor([[1, 5, 9, 42, 7, 100]])
    with torch.no_grad():
        with_adapter = load_model(adapter, trainable=False).eval()(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(merged["path"]).eval()(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir).eval()(ids).logits
    assert (with_adapter - plain).abs().max().item() < 1e-5
    assert (with_adapter - base).abs().max().item() > 1e-6  # the adapter really changed something


@pytest.mark.slow
def test_dpo(tmp_path, tiny_qwen2_dir):
    from engine.plan.steps.train import run

    before = state_dict(tiny_qwen2_dir)
    ctx = train_context(tmp_path, {"method": "dpo", "beta": 0.1, "max_length": 64, **COMMON}, local(tiny_qwen2_dir), PREF_ROWS)
    out = run(ctx)
    check_outputs(ctx, out)
    assert changed(before, out["model"]["path"]) > 0


def length_reward(completions, **columns):
    """A local test reward: longer completions score higher; checks that row columns arrive."""
    assert "answers" in columns and "domain" in columns
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [len(t) / 10.0 for t in texts]


@pytest.mark.slow
def test_grpo_with_local_reward(tmp_path, tiny_qwen2_dir):
    from engine.plan.steps.train import run

    before = state_dict(tiny_qwen2_dir)
    ctx = train_context(tmp_path, {"method": "grpo", "template": QA_TEMPLATE, "num_generations": 2, "max_completion_length": 8,
                                   "rewards": [{"scorer": "exact_match"}], **COMMON}, local(tiny_qwen2_dir), QA_ROWS)
    ctx.resources["reward_funcs"] = [length_reward]  # a reward given in code, beside the recipe's scorer reward
    out = run(ctx)
    check_outputs(ctx, out)
    assert changed(before, out["model"]["path"]) > 0
    log = (ctx.step_dir / "train_log.jsonl").read_text()
    assert "rewards/length_reward" in log and "rewards/reward_exact_match" in log
    args = json.loads((ctx.step_dir / "trl_args.json").read_text())
    assert args["reward_weights"] == [1.0] and args["num_generations"] == 2 and args["use_vllm"] is False


@pytest.mark.slow
def test_distill_logits(tmp_path, tiny_qwen2_dir, engine_cache):
    from engine.models.resolve import resolve_model
    from engine.plan.steps.train import run

    teacher = resolve_model({"source": "tiny", "arch": "qwen2", "seed": 1}, tmp_path)
    before = state_dict(tiny_qwen2_dir)
    ctx = train_context(tmp_path, {"method": "distill", "teacher": {"source": "tiny", "arch": "qwen2", "seed": 1},
                                   "template": QA_TEMPLATE, "temperature": 2.0, "alpha": 0.5, **COMMON},
                        local(tiny_qwen2_dir), QA_ROWS, extra_inputs={"teacher": teacher})
    out = run(ctx)
    check_outputs(ctx, out)
    assert changed(before, out["model"]["path"]) > 0


def test_distill_loss_is_zero_for_identical_logits():
    import torch

    from engine.methods.distill import distill_loss

    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, 3, -100]])
    assert distill_loss(logits, logits, labels, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(logits, torch.randn(2, 5, 11), labels, 2.0).item() > 0


@pytest.mark.slow
def test_classify_deberta_epoch_checkpoints_and_eval(tmp_path, tiny_deberta_dir):
    from transformers import AutoModelForSequenceClassification

    from engine.plan.steps.train import run

    rows = [{"question": f"question number {i} is {'hard' if i % 2 else 'easy'}", "llm_id": "gpt-4", "label": i % 2}
            for i in range(8)]
    before = state_dict(tiny_deberta_dir, "AutoModelForSequenceClassification")
    ctx = train_context(tmp_path, {"method": "classify", "text_fields": ["question", "llm_id"], "num_labels": 2,
                                   "epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "logging_steps": 1,
                                   "checkpoints": {"every": "epoch", "name": "checkpoint_epoch_{epoch}"}},
                        local(tiny_deberta_dir), rows, eval_rows=rows[:4], save="deberta_checkpoints",
                        vars={"router_type": "trained_deberta"})
    out = run(ctx)
    check_outputs(ctx, out, min_steps=4)
    final = Path(out["model"]["path"])
    for epoch in (1, 2):
        ckpt = final / f"checkpoint_epoch_{epoch}"
        assert AutoModelForSequenceClassification.from_pretrained(ckpt).config.num_labels == 2
    assert changed(before, final, "AutoModelForSequenceClassification") > 0
    assert "eval_accuracy" in out["metrics"]["values"] and "eval_f1" in out["metrics"]["values"]
    router = (ctx.step_dir / "router_config.yaml").read_text()
    assert 'router_type: "trained_deberta"' in router and str(final) in router


@pytest.mark.slow
def test_reward_model(tmp_path, tiny_qwen2_dir):
    from engine.plan.steps.train import run

    ctx = train_context(tmp_path, {"method": "reward", "max_length": 64, **COMMON}, local(tiny_qwen2_dir), PREF_ROWS)
    out = run(ctx)
    check_outputs(ctx, out)
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(out["model"]["path"]).config.num_labels == 1


def test_qlora_without_cuda_is_a_clear_error():
    import torch

    from engine.methods.adapter import check_qlora
    from engine.recipe.errors import EngineError

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(EngineError, match="qlora needs a CUDA GPU"):
        check_qlora()


def test_classify_reports_the_metrics_it_is_asked_for():
    from types import SimpleNamespace

    import numpy as np

    from engine.methods.classify import compute_metrics

    prediction = SimpleNamespace(predictions=np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]]), label_ids=np.array([0, 1, 0]))
    assert compute_metrics(2)(prediction) == {"accuracy": 2 / 3, "f1": 2 / 3}
    assert compute_metrics(2, ("f1",))(prediction) == {"f1": 2 / 3}


def test_grpo_max_length_leaves_out_overlong_prompts(tmp_path, tiny_qwen2_dir):
    import json

    from engine.methods.grpo import drop_overlong
    from engine.methods.job import load_tokenizer
    from engine.recipe.errors import EngineError

    tok = load_tokenizer({"type": "Model", "kind": "base", "path": str(tiny_qwen2_dir), "source": {}})
    examples = [{"id": "short", "prompt": [{"role": "user", "content": "hi"}]},
                {"id": "long", "prompt": [{"role": "user", "content": "word " * 200}]}]
    record = tmp_path / "overlong_train.json"
    assert drop_overlong(examples, tok, {"max_length": None}, True, record) == examples and not record.exists()
    kept = drop_overlong(examples, tok, {"max_length": 64, "max_completion_length": 16}, True, record)
    assert [e["id"] for e in kept] == ["short"]
    dropped = json.loads(record.read_text())
    assert dropped["max_prompt_tokens"] == 48 and dropped["dropped"] == 1 and dropped["rows"][0]["id"] == "long"
    with pytest.raises(EngineError, match="no room for prompts"):
        drop_overlong(examples, tok, {"max_length": 16, "max_completion_length": 16}, True, record)
