"""The TRL backend: render a train step's plan entry into the fields of its method's TRL config, and train.

`render_args` is what `trl_args.json` holds: the common fields (epochs, batch from the plan's batch arithmetic,
optimiser, precision, DeepSpeed config path, tracking), the method's own fields (`config_fields`), then the
recipe's `trainer_args:`; every field is checked against the installed config dataclass, so an unknown or renamed
field is an error with did-you-mean, never silently ignored. Checkpoints are the engine's (see callbacks.py),
so the trainer's own saving is off (`save_strategy: no`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Any, Optional

from engine.recipe.errors import RecipeErrors, did_you_mean

TRACKERS = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}


def method_module(method: str):
    from engine.catalog import METHODS

    return METHODS.get(method)


def config_class_of(method: str) -> type:
    from engine.methods.job import config_class

    return config_class(method_module(method).CONFIG)


def config_field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def check_fields(fields: dict, cls: type, *, path: tuple = ("trainer_args",), what: str = "trainer_args") -> None:
    """Every key of `fields` must be an init field of `cls`; else RecipeErrors with did-you-mean."""
    known = config_field_names(cls)
    errors = []
    for key in fields:
        if key not in known:
            hint = did_you_mean(key, known)
            errors.append(dict(what=f"{what}: '{key}' is not a field of {cls.__module__.split('.')[0]}.{cls.__name__}",
                               path=(*path, key),
                               why=f"the installed {cls.__name__} has no such field (it would be ignored or fail)",
                               fix=hint or "see the config class's documentation for the fields it has"))
    if errors:
        from engine.recipe.errors import RecipeError

        raise RecipeErrors([RecipeError(**e) for e in errors])


def available_trackers(wanted: list[str]) -> tuple[list[str], list[str]]:
    """(report_to, unavailable): trackers whose package is importable, and the names that are not."""
    ok, missing = [], []
    for name in wanted:
        if name == "none":
            continue
        if any(importlib.util.find_spec(m) is not None for m in TRACKERS.get(name, (name,))):
            ok.append(name)
        else:
            missing.append(name)
    return ok, missing


def tracking_env(tracking: Optional[dict], step_dir: Path, run_dir: Optional[Path], run_name: str) -> dict[str, str]:
    """Environment the trackers read: tensorboard's log dir, wandb's project/mode/dir, mlflow's experiment/URI."""
    tracking = tracking or {}
    env = {"TENSORBOARD_LOGGING_DIR": str(step_dir / "tensorboard")}
    backends = tracking.get("backends") or ["tensorboard"]
    root = Path(run_dir) if run_dir else step_dir
    if "wandb" in backends:
        env.update({"WANDB_MODE": tracking.get("mode") or "offline", "WANDB_DIR": str(root),
                    "WANDB_NAME": run_name})
        if tracking.get("project"):
            env["WANDB_PROJECT"] = tracking["project"]
    if "mlflow" in backends:
        env["MLFLOW_TRACKING_URI"] = tracking.get("tracking_uri") or (root / "mlruns").resolve().as_uri()
        if not tracking.get("tracking_uri"):
            env["MLFLOW_ALLOW_FILE_STORE"] = "true"  # mlflow >= 3.x refuses the plain-file store unless asked
        env["MLFLOW_RUN_NAME"] = run_name
        if tracking.get("project"):
            env["MLFLOW_EXPERIMENT_NAME"] = tracking["project"]
    return env


def render_args(step: dict, step_dir: Path | str, *, seed: int = 0, gpus: int = 0, tracking: Optional[dict] = None,
                run_name: str = "train", check: bool = True) -> dict:
    """The TRL (or transformers, for classify) config fields of a compiled train step."""
    params = step["params"]
    launch = step.get("launch") or {}
    batch = launch.get("batch") or {"per_device": params.get("batch_size", 8),
                                    "gradient_accumulation": params.get("gradient_accumulation") or 1}
    precision = launch.get("precision", "fp32")
    step_dir = Path(step_dir)
    wanted = list((tracking or {}).get("backends") or ["tensorboard"])
    report_to, _ = available_trackers(wanted)
    args: dict[str, Any] = {
        "output_dir": str(step_dir / "trainer"),
        "run_name": run_name,
        "num_train_epochs": float(params.get("epochs", 1.0)),
        "max_steps": params.get("max_steps") or -1,
        "per_device_train_batch_size": batch["per_device"],
        "per_device_eval_batch_size": batch["per_device"],
        "gradient_accumulation_steps": batch["gradient_accumulation"],
        "learning_rate": params.get("learning_rate", 2e-5),
        "lr_scheduler_type": params.get("lr_scheduler", "linear"),
        "warmup_steps": float(params.get("warmup_ratio", 0.0)),  # < 1: a ratio of the total steps
        "weight_decay": params.get("weight_decay", 0.0),
        "max_grad_norm": params.get("max_grad_norm", 1.0),
        "seed": params["seed"] if params.get("seed") is not None else seed,
        "logging_steps": params.get("logging_steps", 10),
        "logging_first_step": True,
        "save_strategy": "no",
        "report_to": report_to or "none",
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "use_cpu": gpus == 0,
        "eval_strategy": "epoch" if params.get("eval_data") else "no",
    }
    cls = config_class_of(params["method"]) if check else None
    names = config_field_names(cls) if cls is not None else set()
    # transformers 5 renamed gradient_checkpointing (TRL configs default it to True): always say which we want
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names or not names else "gradient_checkpointing"
    args[checkpointing] = bool(params.get("gradient_checkpointing", False))
    if launch.get("deepspeed_config"):
        args["deepspeed"] = str(step_dir / "ds_config.json")
    args.update(method_module(params["method"]).config_fields(params))
    extra = dict(params.get("trainer_args") or {})
    if cls is not None:
        check_fields(extra, cls)
    args.update(extra)
    if cls is not None:
        check_fields(args, cls, path=(), what="rendered field")
    return args


def is_adapter_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def train(job, *, step_id: str = "train", events_path: Optional[str] = None, final_dir: Path | str) -> dict:
    """Build the method's trainer, train, save the final model to `final_dir`; returns the result record."""
    import time

    from engine.backends.callbacks import CheckpointCallback, MetricsCallback, use_rich_progress
    from engine.runs.tracking import config_callback

    start = time.time()
    trainer = method_module(job.method).build_trainer(job)
    built = time.time()
    metrics_cb = MetricsCallback(Path(job.step_dir) / "train_log.jsonl", events_path, step_id)
    trainer.add_callback(metrics_cb)
    trainer.add_callback(config_callback(trainer, job.step_dir, step_id, events_path))  # recipe + lock to trackers
    checkpoints = job.params.get("checkpoints") or {}
    if checkpoints.get("every", "none") != "none":
        trainer.add_callback(CheckpointCallback(trainer, Path(final_dir), checkpoints))
    use_rich_progress(trainer)
    output = trainer.train()
    trained = time.time()
    final_dir = Path(final_dir)
    trainer.save_model(str(final_dir))
    model = trainer.model
    adapter = is_adapter_model(model) or (hasattr(model, "module") and is_adapter_model(model.module))
    if trainer.is_world_process_zero() and trainer.processing_class is not None:
        trainer.processing_class.save_pretrained(str(final_dir))
    values = dict(output.metrics)
    values.update(metrics_cb.last)
    result = {
        "kind": "adapter" if adapter else "base",
        "path": str(final_dir),
        "global_step": trainer.state.global_step,
        "metrics": _finite(values),
        "log_history": trainer.state.log_history,
        "checkpoints": getattr(trainer, "engine_checkpoints", []),
        "seconds": {"build": round(built - start, 3), "train": round(trained - built, 3),
                    "save": round(time.time() - trained, 3)},
        "world_size": trainer.args.world_size,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
    }
    return result


def _finite(values: dict) -> dict:
    out = {}
    for k, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v) if v == v and v not in (float("inf"), float("-inf")) else str(v)
        elif isinstance(v, (str, bool)) or v is None:
            out[k] = v
    return out


def train_env_defaults() -> dict[str, str]:
    """Quiet, deterministic defaults for a training process (respecting what the user set)."""
    return {k: v for k, v in {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_TELEMETRY": "1"}.items()
            if k not in os.environ}
