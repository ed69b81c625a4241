"""The Axolotl backend: config rendering, the unknown-key check, the side env's build commands; the real runs need
the side environment (`recipe env create axolotl`) and carry the `axolotl` marker."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.recipe.errors import EngineError, RecipeErrors
from train_support import train_context
from test_train_methods import QA_ROWS, QA_TEMPLATE, local

# A subset of AxolotlInputConfig's fields (0.19.0) — enough for the rendered configs below.
KNOWN = {"base_model", "output_dir", "dataset_prepared_path", "micro_batch_size", "gradient_accumulation_steps",
         "num_epochs", "learning_rate", "lr_scheduler", "warmup_ratio", "weight_decay", "max_grad_norm", "sequence_len",
         "gradient_checkpointing", "seed", "logging_steps", "save_strategy", "val_set_size", "use_tensorboard",
         "max_steps", "bf16", "fp16", "tf32", "flash_attention", "sdp_attention", "optimizer", "deepspeed", "adapter",
         "lora_r", "lora_alpha", "lora_dropout", "lora_target_linear", "lora_target_modules", "lora_mlp_kernel",
         "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel", "datasets", "test_datasets", "rl", "trl",
         "dpo_beta", "load_in_4bit", "load_in_8bit", "lora_modules_to_save"}

SFT_LORA = {"method": "sft", "template": QA_TEMPLATE, "backend": "axolotl", "adapter": {"type": "lora", "r": 8, "alpha": 16},
            "max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1}
GRPO = {"method": "grpo", "template": QA_TEMPLATE, "backend": "axolotl", "num_generations": 2, "max_completion_length": 8,
        "rewards": [{"scorer": "exact_match", "weight": 2.0}], "reward_code": ["mod:fn"], "max_steps": 2, "batch_size": 2}


def test_sft_lora_config_on_cpu(tmp_path, tiny_qwen2_dir):
    from engine.backends.axolotl import check_keys, render_config

    ctx = train_context(tmp_path, {**SFT_LORA, "axolotl": {"lora_target_linear": False, "lora_target_modules": ["q_proj"]}},
                        local(tiny_qwen2_dir), QA_ROWS)
    cfg = render_config(ctx.step, ctx.step_dir, model_path="M", data_path="D.jsonl")
    assert cfg["adapter"] == "lora" and cfg["lora_r"] == 8 and cfg["micro_batch_size"] == 2 and cfg["max_steps"] == 2
    assert cfg["bf16"] is False and cfg["flash_attention"] is False and cfg["optimizer"] == "adamw_torch"
    assert cfg["lora_mlp_kernel"] is False and cfg["lora_qkv_kernel"] is False
    assert cfg["datasets"][0]["type"] == "chat_template" and cfg["datasets"][0]["roles_to_train"] == ["assistant"]
    assert cfg["lora_target_modules"] == ["q_proj"]  # the raw `axolotl:` block is merged last
    check_keys(cfg, KNOWN)


def test_grpo_config_and_rewards_module(tmp_path, tiny_qwen2_dir):
    from engine.backends.axolotl import render_config, rewards_module

    ctx = train_context(tmp_path, GRPO, local(tiny_qwen2_dir), QA_ROWS)
    cfg = render_config(ctx.step, ctx.step_dir, model_path="M", data_path="D.jsonl")
    assert cfg["rl"] == "grpo" and cfg["trl"]["num_generations"] == 2 and cfg["trl"]["use_vllm"] is False
    assert cfg["trl"]["reward_funcs"] == ["recipe_rewards.reward_0", "recipe_rewards.reward_1"]
    assert cfg["trl"]["reward_weights"] == [2.0, 1.0]
    assert cfg["datasets"][0]["type"] == "recipe_rewards.prompt_transform"
    compile(rewards_module(ctx.step_dir), "recipe_rewards.py", "exec")


def test_unknown_axolotl_key_is_an_error_with_did_you_mean():
    from engine.backends.axolotl import check_keys

    with pytest.raises(RecipeErrors) as info:
        check_keys({"base_model": "m", "lora_rr": 8, "micro_batch_sise": 2}, KNOWN)
    text = str(info.value)
    assert "lora_rr" in text and "lora_r" in text and "micro_batch_size" in text and "2 problems" in text


def test_methods_axolotl_does_not_run(tmp_path):
    from engine.backends.axolotl import render_config

    with pytest.raises(EngineError, match="backend axolotl supports"):
        render_config({"params": {"method": "classify"}}, tmp_path, model_path="M", data_path="D")


def test_parse_logs():
    from engine.backends.axolotl import parse_logs

    text = "noise\n{'loss': 2.5, 'grad_norm': 1.0, 'learning_rate': 0.001, 'epoch': 0.5}\n{'train_runtime': '3.2', 'train_loss': 2.4}\n"
    assert parse_logs(text) == [{"loss": 2.5, "grad_norm": 1.0, "learning_rate": 0.001, "epoch": 0.5},
                                {"train_runtime": 3.2, "train_loss": 2.4}]


def test_side_env_commands_and_missing_env(tmp_path, monkeypatch):
    from engine.envs import axolotl

    cmds = axolotl.create_commands(tmp_path / "env")
    assert any("axolotl==0.19.0" in c for c in cmds[2]) and cmds[0][1:3] == ["-m", "venv"]
    assert any(a.startswith("-e") or a == "recipe-engine" or a.endswith("main") for a in cmds[3])
    monkeypatch.setenv("RECIPE_ENGINE_CACHE", str(tmp_path))
    monkeypatch.delenv(axolotl.ENV_VAR, raising=False)
    with pytest.raises(EngineError, match="recipe env create axolotl"):
        axolotl.locate()


def _side_env_python():
    from engine.envs.axolotl import locate

    try:
        return locate()
    except EngineError:
        return None


@pytest.mark.axolotl
@pytest.mark.slow
@pytest.mark.parametrize("train", [SFT_LORA, {**GRPO, "rewards": [{"scorer": "exact_match"}], "learning_rate": 1e-3,
                                             "reward_code": ["axolotl_test_rewards:length_reward"]}],
                         ids=["sft_lora", "grpo"])
def test_axolotl_trains_in_side_env(tmp_path, tiny_qwen2_dir, train):
    if _side_env_python() is None:
        pytest.skip("the axolotl side environment is not built (recipe env create axolotl)")
    from engine.plan.steps.train import run

    import math

    from safetensors.torch import load_file

    ctx = train_context(tmp_path, train, local(tiny_qwen2_dir), QA_ROWS)
    # an exact-match reward is 0 for every completion of a random model (no advantage, no update): add a varying
    # one, importable in the side env from the step dir (its working directory)
    (ctx.step_dir / "axolotl_test_rewards.py").write_text(
        "def length_reward(completions, **kw):\n"
        "    return [len(c[0]['content'] if isinstance(c, list) else c) / 10.0 for c in completions]\n")
    out = run(ctx)
    assert (ctx.step_dir / "axolotl.yaml").is_file()
    values = out["metrics"]["values"]
    assert values["global_step"] >= 2 and math.isfinite(values["train_loss"])
    final = Path(out["model"]["path"])
    if train["adapter"]["type"] if "adapter" in train else False:
        assert out["model"]["kind"] == "adapter"
        weights = load_file(final / "adapter_model.safetensors")
        assert any(k for k, v in weights.items() if "lora_B" in k and v.abs().max() > 0)  # B starts at zero
    else:
        before = load_file(Path(tiny_qwen2_dir) / "model.safetensors")
        after = load_file(final / "model.safetensors")
        assert max((after[k] - v).abs().max().item() for k, v in before.items() if k in after) > 0
