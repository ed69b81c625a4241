"""The DeepSpeed JSON of a train step, generated from the recipe's `launch.deepspeed` block and the batch plan.

The result is what HF Trainer / TRL accept as `deepspeed=` (and accelerate as `--deepspeed_config_file`):
explicit batch numbers from the `BatchPlan` (the trainer checks they match its own arguments),
`gradient_clipping: auto` (filled from `max_grad_norm`), bf16/fp16 from the resolved precision and a
`zero_optimization` section. Pure: no import of deepspeed or torch.

Merge order when the recipe names a DeepSpeed file (`deepspeed.config`, loaded by the caller as `base`):
1. the user's file is the base;
2. the engine's batch and precision keys override it (they must agree with the trainer's arguments);
   `gradient_clipping` is added only when the file has none;
3. the `zero_optimization` keys of options written in the recipe's block override the file's (options
   left at their defaults do not, so the file's stage survives a block that only names the file);
4. `extra` is deep-merged last.
Without a file, the generated config is used whole, then `extra` is merged. Mappings deep-merge, other
values replace; key order follows insertion, so equal inputs give byte-identical JSON.
"""

from __future__ import annotations

import copy
from typing import Any

from engine.plan.batch import BatchPlan
from engine.recipe.models.launch import DeepSpeedConfig

RESOLVED_PRECISIONS = ("bf16", "fp16", "fp32")

# Which zero_optimization keys each option of the block writes (used to tell recipe keys from defaults).
_ZERO_KEYS_OF_OPTION = {
    "stage": ("stage",),
    "overlap_comm": ("overlap_comm",),
    "contiguous_gradients": ("contiguous_gradients",),
    "offload_optimizer": ("offload_optimizer",),
    "offload_params": ("offload_param",),
    "nvme_path": ("offload_optimizer", "offload_param"),
    "param_persistence_threshold": ("stage3_param_persistence_threshold",),
    "gather_16bit_weights_on_model_save": ("stage3_gather_16bit_weights_on_model_save",),
}


def resolve_precision(precision: str, gpus: int) -> str:
    """`auto` -> bf16 with GPUs, fp32 on CPU; bf16/fp16/fp32 stay as written."""
    if precision == "auto":
        return "bf16" if gpus > 0 else "fp32"
    if precision in RESOLVED_PRECISIONS:
        return precision
    raise ValueError(f"unknown precision {precision!r}; expected auto, bf16, fp16 or fp32")


def deepspeed_config(ds: DeepSpeedConfig, batch: BatchPlan, precision: str, *, base: dict | None = None) -> dict:
    """The DeepSpeed config dict for one train step (see the module docstring for the merge order)."""
    if precision not in RESOLVED_PRECISIONS:
        raise ValueError(f"precision must be resolved to bf16, fp16 or fp32 (see resolve_precision), got {precision!r}")
    owned: dict[str, Any] = {
        "train_batch_size": batch.global_batch,
        "train_micro_batch_size_per_gpu": batch.per_device,
        "gradient_accumulation_steps": batch.grad_accum,
        "gradient_clipping": "auto",
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
    }
    zero = zero_optimization(ds)
    if base is None:
        config = {**owned, "zero_optimization": zero}
    else:
        if "gradient_clipping" in base:
            del owned["gradient_clipping"]
        written = {key for option in ds.model_fields_set for key in _ZERO_KEYS_OF_OPTION.get(option, ())}
        overrides = {key: value for key, value in zero.items() if key in written}
        config = _merged(base, owned)
        if overrides:
            config = _merged(config, {"zero_optimization": overrides})
    return _merged(config, ds.extra)


def zero_optimization(ds: DeepSpeedConfig) -> dict[str, Any]:
    """The `zero_optimization` section: stage, communication options, offloads and stage-3 options."""
    zero: dict[str, Any] = {"stage": ds.stage}
    if ds.stage >= 1:
        zero["overlap_comm"] = ds.overlap_comm
        zero["contiguous_gradients"] = ds.contiguous_gradients
    if ds.offload_optimizer != "none":
        zero["offload_optimizer"] = _offload(ds.offload_optimizer, ds.nvme_path)
    if ds.offload_params != "none":
        zero["offload_param"] = _offload(ds.offload_params, ds.nvme_path)
    if ds.stage == 3:
        if ds.param_persistence_threshold is not None:
            zero["stage3_param_persistence_threshold"] = ds.param_persistence_threshold
        zero["stage3_gather_16bit_weights_on_model_save"] = ds.gather_16bit_weights_on_model_save
    return zero


def _offload(device: str, nvme_path: str | None) -> dict[str, Any]:
    section: dict[str, Any] = {"device": device, "pin_memory": True}
    if device == "nvme":
        section["nvme_path"] = nvme_path
    return section


def _merged(base: dict, override: dict) -> dict:
    """A new dict: `base` with `override` deep-merged on top (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
