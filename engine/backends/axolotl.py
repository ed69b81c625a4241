"""The Axolotl backend: render a train step into an Axolotl config, check it, run `axolotl train` in its side env.

Axolotl pins its own TRL/transformers, so it lives in a managed venv (`recipe env create axolotl`, see
engine/envs/axolotl.py) and runs as a subprocess: `python -m axolotl.cli.train axolotl.yaml` with the step dir as
working directory and `AXOLOTL_DO_NOT_TRACK=1`. Rows are rendered by the engine (engine/methods/examples.py), so
both backends train on the same text:
  sft chat         {"messages": [...]}               type chat_template, loss on assistant turns only
  sft completion   {"segments": [{label: false, text: prompt}, {label: true, text: completion}]}  type input_output
  dpo              {"prompt", "chosen", "rejected"} (chat messages or text)   type chat_template.default / passthrough
  grpo             {"prompt": [...], **row fields}   type recipe_rewards.prompt_transform (written into the step
                   dir with one `reward_N` per reward term, built by engine.methods.grpo in the side env)
Checks: every key must be a field of Axolotl's `AxolotlInputConfig` (Axolotl itself silently drops unknown keys),
then Axolotl's own `validate_config`. On a machine without a GPU the CPU-safe flags are set (STACK.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Optional

from engine.models.resolve import base_of
from engine.recipe.errors import EngineError, RecipeError, RecipeErrors, did_you_mean

METHODS = ("sft", "dpo", "grpo")
CPU_FLAGS = {"bf16": False, "fp16": False, "tf32": False, "flash_attention": False, "sdp_attention": False,
             "optimizer": "adamw_torch"}
CPU_LORA_FLAGS = {"lora_mlp_kernel": False, "lora_qkv_kernel": False, "lora_o_kernel": False, "lora_embedding_kernel": False}
SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant", "constant_with_warmup": "constant_with_warmup",
              "cosine_with_restarts": "cosine_with_restarts", "polynomial": "polynomial"}
REWARDS_MODULE = "recipe_rewards"


def render_config(step: dict, step_dir: Path | str, *, model_path: str, data_path: str, eval_path: Optional[str] = None,
                  gpus: int = 0, seed: int = 0, chat: bool = True) -> dict:
    """The Axolotl config (a dict, written as axolotl.yaml) of a compiled train step."""
    params = step["params"]
    method = params["method"]
    if method not in METHODS:
        raise EngineError(f"backend axolotl supports methods {', '.join(METHODS)}, not {method}; use `backend: trl`")
    launch = step.get("launch") or {}
    batch = launch.get("batch") or {"per_device": params.get("batch_size", 8),
                                    "gradient_accumulation": params.get("gradient_accumulation") or 1}
    step_dir = Path(step_dir)
    cfg: dict[str, Any] = {
        "base_model": str(model_path),
        "output_dir": str(step_dir / "axolotl_output"),
        "dataset_prepared_path": str(step_dir / "axolotl_prepared"),
        "micro_batch_size": batch["per_device"],
        "gradient_accumulation_steps": batch["gradient_accumulation"],
        "num_epochs": params.get("epochs", 1.0),
        "learning_rate": params.get("learning_rate", 2e-5),
        "lr_scheduler": SCHEDULERS[params.get("lr_scheduler", "linear")],
        "warmup_ratio": params.get("warmup_ratio", 0.0),
        "weight_decay": params.get("weight_decay", 0.0),
        "max_grad_norm": params.get("max_grad_norm", 1.0),
        "sequence_len": params.get("max_length") or 1024,
        "gradient_checkpointing": bool(params.get("gradient_checkpointing", False)),
        "seed": params["seed"] if params.get("seed") is not None else seed,
        "logging_steps": params.get("logging_steps", 10),
        "save_strategy": "no",
        "val_set_size": 0,
        "use_tensorboard": True,
    }
    if params.get("max_steps"):
        cfg["max_steps"] = params["max_steps"]
    precision = launch.get("precision", "fp32")
    cfg["bf16"], cfg["fp16"] = precision == "bf16", precision == "fp16"
    if launch.get("deepspeed_config"):
        cfg["deepspeed"] = str(step_dir / "ds_config.json")
    adapter = params.get("adapter") or {"type": "full"}
    if adapter["type"] in ("lora", "qlora"):
        cfg.update({"adapter": "lora" if adapter["type"] == "lora" else "qlora", "lora_r": adapter.get("r", 16),
                    "lora_alpha": adapter.get("alpha", 32), "lora_dropout": adapter.get("dropout", 0.05)})
        targets = adapter.get("target_modules", "all-linear")
        if targets == "all-linear":
            cfg["lora_target_linear"] = True
        else:
            cfg["lora_target_modules"] = list(targets)
        if adapter.get("modules_to_save"):
            cfg["lora_modules_to_save"] = list(adapter["modules_to_save"])
        if adapter["type"] == "qlora":
            cfg["load_in_4bit" if adapter.get("bits", 4) == 4 else "load_in_8bit"] = True
    cfg["datasets"] = [_dataset_entry(method, data_path, chat)]
    if eval_path:
        cfg["test_datasets"] = [{**_dataset_entry(method, eval_path, chat), "split": "train"}]
    if method == "dpo":
        cfg["rl"] = "dpo"
        cfg["dpo_beta"] = params.get("beta", 0.1)
    if method == "grpo":
        cfg["rl"] = "grpo"
        n_rewards = len(params.get("rewards") or []) + (1 if params.get("judge") else 0) + len(params.get("reward_code") or [])
        from engine.methods.grpo import config_fields

        fields = config_fields(params)
        cfg["trl"] = {"use_vllm": False, "beta": params.get("beta", 0.0), "num_generations": params["num_generations"],
                      "max_completion_length": params["max_completion_length"], "temperature": params.get("temperature", 1.0),
                      "reward_funcs": [f"{REWARDS_MODULE}.reward_{i}" for i in range(n_rewards)],
                      "reward_weights": fields.get("reward_weights", [])}
    if gpus == 0:
        cfg.update(CPU_FLAGS)
        if adapter["type"] in ("lora", "qlora"):
            cfg.update(CPU_LORA_FLAGS)
    cfg.update(params.get("axolotl") or {})
    return cfg


def _dataset_entry(method: str, path: str, chat: bool) -> dict:
    if method == "grpo":
        return {"path": str(path), "ds_type": "json", "type": f"{REWARDS_MODULE}.prompt_transform"}
    if method == "dpo":
        return {"path": str(path), "ds_type": "json", "type": "chat_template.default" if chat else "passthrough",
                **({"field_messages": "prompt"} if chat else {})}
    if chat:
        return {"path": str(path), "ds_type": "json", "type": "chat_template", "field_messages": "messages",
                "roles_to_train": ["assistant"]}
    return {"path": str(path), "ds_type": "json", "type": "input_output"}


def check_keys(config: dict, known: set[str]) -> None:
    """Every top-level key must be an Axolotl config field; unknown ones (Axolotl drops them silently) are errors."""
    problems = []
    for key in config:
        if key not in known:
            hint = did_you_mean(key, known)
            problems.append(RecipeError(what=f"'{key}' is not an Axolotl config key", path=("axolotl", key),
                                        why="Axolotl silently ignores keys it does not know",
                                        fix=hint or "see Axolotl's config reference for the installed version"))
    if problems:
        raise RecipeErrors(problems)


KEYS_SCRIPT = """\
import json
from axolotl.utils.schemas.config import AxolotlInputConfig
keys = set()
for name, field in AxolotlInputConfig.model_fields.items():
    keys.add(name)
    if field.alias:
        keys.add(field.alias)
print(json.dumps(sorted(keys)))
"""

VALIDATE_SCRIPT = """\
import sys, yaml
from axolotl.utils.config import validate_config
from axolotl.utils.dict import DictDefault
validate_config(DictDefault(yaml.safe_load(open(sys.argv[1]))))
print("ok")
"""


def known_keys(python: Path) -> set[str]:
    """The config keys of the Axolotl installed in the side env (cached next to it)."""
    cache = Path(python).parent.parent / "axolotl_keys.json"
    if cache.is_file():
        return set(json.loads(cache.read_text(encoding="utf-8")))
    out = subprocess.run([str(python), "-c", KEYS_SCRIPT], capture_output=True, text=True, env=_side_env())
    if out.returncode:
        raise EngineError(f"cannot read Axolotl's config schema from {python}: {out.stderr.strip()[-500:]}")
    keys = json.loads(out.stdout.strip().splitlines()[-1])
    cache.write_text(json.dumps(keys), encoding="utf-8")
    return set(keys)


def _side_env(extra: Optional[dict] = None) -> dict:
    env = {**os.environ, "AXOLOTL_DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false", **(extra or {})}
    env.pop("PYTHONPATH", None)  # the side env has its own engine install; never import this env's packages
    return env


def rewards_module(step_dir: Path) -> str:
    """Source of recipe_rewards.py: the step's GRPO rewards built by the engine inside the side env."""
    return f'''"""Written by recipe-engine: GRPO rewards and the prompt transform for Axolotl (step {step_dir.name})."""
import json
from engine.methods.grpo import reward_functions

_PARAMS = json.load(open({str(step_dir / "step.json")!r}))["params"]
_FUNCS = reward_functions(_PARAMS)
''' + "".join(f"\n\ndef reward_{i}(completions, **kwargs):\n    return _FUNCS[{i}](completions, **kwargs)\n"
              for i in range(32)) + '''

def prompt_transform(cfg, *args, **kwargs):
    def transform(example, tokenizer=None):
        return {"prompt": example["prompt"]}
    return transform, {"remove_columns": []}
'''


def write_examples(prepared: dict, step_dir: Path, chat: bool) -> tuple[str, Optional[str]]:
    """Render the step's rows into the JSONL Axolotl reads (see the module docstring)."""
    from engine.methods import examples as ex
    from engine.methods.job import read_rows

    params = prepared["params"]
    template = ex.load_step_template(params.get("template"), Path(prepared["recipe_dir"]))

    def one(row: dict) -> dict:
        if params["method"] == "grpo":
            return ex.prompt_example(row, template, chat)
        if params["method"] == "dpo":
            return ex.preference_example(row, template, chat)
        example = ex.sft_example(row, template, "chat" if chat else "completion")
        if chat:
            return {"messages": example.get("messages") or example["prompt"] + example["completion"]}
        return {"segments": [{"label": False, "text": example["prompt"]}, {"label": True, "text": example["completion"]}]}

    paths = []
    for key, name in (("data", "axolotl_train.jsonl"), ("eval_data", "axolotl_eval.jsonl")):
        if not prepared.get(key):
            paths.append(None)
            continue
        out = step_dir / name
        out.write_text("".join(json.dumps(one(r), ensure_ascii=False) + "\n" for r in read_rows(prepared[key]["path"])),
                       encoding="utf-8")
        paths.append(str(out))
    return paths[0], paths[1]


def run_step(ctx, prepared: dict) -> dict:
    """Render, check and run Axolotl for a train step; returns the result record the executor collects."""
    from ruamel.yaml import YAML

    from engine.envs.axolotl import locate

    python = locate()
    params = prepared["params"]
    fmt = params.get("format", "auto")
    chat = fmt == "chat" or (fmt == "auto" and _has_chat_template(Path(prepared["model"]["path"])))
    data_path, eval_path = write_examples(prepared, ctx.step_dir, chat)
    gpus = (ctx.plan.get("launch") or {}).get("gpus", 0)
    cfg = render_config(ctx.step, ctx.step_dir, model_path=prepared["model"]["path"], data_path=data_path,
                        eval_path=eval_path, gpus=gpus, seed=ctx.seed, chat=chat)
    tokenizer = base_of(prepared["model"]).get("tokenizer")  # the recipe's `tokenizer:` override
    if tokenizer:
        cfg["tokenizer_config"] = tokenizer
    check_keys(cfg, known_keys(python))
    if (ctx.step.get("launch") or {}).get("deepspeed_config"):
        (ctx.step_dir / "ds_config.json").write_text(json.dumps(ctx.step["launch"]["deepspeed_config"], indent=2))
    config_path = ctx.step_dir / "axolotl.yaml"
    yaml = YAML()
    yaml.version = (1, 1)  # Axolotl reads with PyYAML (YAML 1.1): quote `no`, `yes`, `on`... so they stay strings
    with open(config_path, "w", encoding="utf-8") as f:
        yaml.dump(cfg, f)
    if params["method"] == "grpo":
        (ctx.step_dir / f"{REWARDS_MODULE}.py").write_text(rewards_module(ctx.step_dir), encoding="utf-8")
    env = _side_env({"TENSORBOARD_LOGGING_DIR": str(ctx.step_dir / "tensorboard")})
    check = subprocess.run([str(python), "-c", VALIDATE_SCRIPT, str(config_path)], capture_output=True, text=True,
                           env=env, cwd=ctx.step_dir)
    if check.returncode:
        raise EngineError(f"Axolotl rejected the rendered config {config_path}: {check.stderr.strip()[-800:]}")
    ctx.emit("train_start", launcher="axolotl", method=params["method"], world_size=1)
    log = ctx.step_dir / "train.log"
    from engine.plan.steps.train import stream

    rc = stream([str(python), "-m", "axolotl.cli.train", str(config_path)], {**env, "PYTHONPATH": str(ctx.step_dir)}, log)
    if rc:
        raise EngineError(f"axolotl train failed (exit {rc}); see {log}")
    return collect_result(ctx, cfg, log, adapter=cfg.get("adapter") is not None, final_dir=Path(prepared["final_dir"]))


def _has_chat_template(model_dir: Path) -> bool:
    from engine.data.chat_template import load_chat_template

    return load_chat_template(model_dir) is not None


_LOG_LINE = re.compile(r"\{['\"](?:loss|train_loss|train_runtime)['\"].*\}")


def parse_logs(text: str) -> list[dict]:
    """The `{'loss': ..., ...}` records Axolotl (transformers) prints, as dicts with numbers."""
    import ast

    records = []
    for match in _LOG_LINE.finditer(text):
        try:
            record = ast.literal_eval(match.group(0))
        except (ValueError, SyntaxError):
            continue
        records.append({k: _number(v) for k, v in record.items()})
    return records


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def collect_result(ctx, cfg: dict, log: Path, *, adapter: bool, final_dir: Path) -> dict:
    from engine.runs.atomic import append_jsonl

    out_dir = Path(cfg["output_dir"])
    if final_dir.exists():
        import shutil

        shutil.rmtree(final_dir)
    out_dir.rename(final_dir)
    records = parse_logs(log.read_text(encoding="utf-8", errors="replace"))
    metrics: dict[str, Any] = {}
    logged = 0
    for record in records:
        append_jsonl(ctx.step_dir / "train_log.jsonl", record)
        ctx.emit("train_log", **record)
        metrics.update(record)
        logged += "loss" in record
    steps = logged * int(cfg.get("logging_steps") or 1)  # a loss record every logging_steps optimizer steps
    if cfg.get("max_steps"):
        steps = min(steps, int(cfg["max_steps"]))
    return {"kind": "adapter" if adapter else "base", "path": str(final_dir), "metrics": metrics,
            "global_step": steps, "backend": "axolotl"}
