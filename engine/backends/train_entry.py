"""`python -m engine.backends.train_entry STEP_DIR`: the training process a launcher starts (one per rank).

It reads what the train step executor wrote into STEP_DIR — `step.json` (method, params, resolved model and data
artifacts, where the final model goes), `trl_args.json` (the rendered config fields) and, with DeepSpeed,
`ds_config.json` — trains, and the main process writes `result.json` (atomically). Gradient accumulation is
derived again from the real world size (WORLD_SIZE) when it differs from the plan's: with a `global_batch_size`
the global batch is kept, otherwise the accumulation steps are, and the change is recorded in the result.
The in-process path (`launcher: python`) calls `run(step_dir)` directly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional

from engine.recipe.errors import EngineError
from engine.runs.atomic import atomic_write_json, read_json

STEP_FILE = "step.json"
ARGS_FILE = "trl_args.json"
DS_FILE = "ds_config.json"
RESULT_FILE = "result.json"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def adjust_batch(args: dict, ds_config: Optional[dict], planned: dict, global_batch: Optional[int], world: int) -> Optional[dict]:
    """Re-derive gradient accumulation for the real world size; returns a record of the change (None if none)."""
    if not planned or planned.get("world_size") == world:
        return None
    per_device = planned["per_device"]
    if global_batch:
        if global_batch % (per_device * world):
            raise EngineError(f"global batch {global_batch} is not a multiple of per-device batch {per_device} × the "
                              f"real world size {world}; change global_batch_size or the number of processes")
        accum = global_batch // (per_device * world)
    else:
        accum = planned["gradient_accumulation"]
    args["gradient_accumulation_steps"] = accum
    if ds_config is not None:
        ds_config.update({"train_batch_size": per_device * accum * world, "gradient_accumulation_steps": accum})
    return {"planned_world_size": planned.get("world_size"), "world_size": world, "gradient_accumulation": accum,
            "global_batch": per_device * accum * world}


def load_job(step_dir: Path, reward_funcs: Optional[list[Callable]] = None):
    from engine.methods.job import TrainJob

    spec = read_json(step_dir / STEP_FILE)
    args = read_json(step_dir / ARGS_FILE)
    ds_config = read_json(step_dir / DS_FILE) if (step_dir / DS_FILE).is_file() else None
    change = adjust_batch(args, ds_config, spec.get("batch") or {}, spec["params"].get("global_batch_size"), world_size())
    if ds_config is not None:
        args["deepspeed"] = ds_config
    job = TrainJob(
        method=spec["method"], params=spec["params"], model=spec["model"], data_path=Path(spec["data"]["path"]),
        eval_path=Path(spec["eval_data"]["path"]) if spec.get("eval_data") else None, args=args, step_dir=step_dir,
        teacher=spec.get("teacher"), reference=spec.get("reference"), reward_funcs=list(reward_funcs or []),
        recipe_dir=Path(spec["recipe_dir"]) if spec.get("recipe_dir") else None)
    return job, spec, change


def run(step_dir: Path | str, *, reward_funcs: Optional[list[Callable]] = None) -> dict:
    """Train the step in this process; the main process writes and returns result.json's record."""
    from engine.backends.trl import train

    step_dir = Path(step_dir)
    job, spec, change = load_job(step_dir, reward_funcs)
    result = train(job, step_id=spec.get("step_id", "train"), events_path=spec.get("events"), final_dir=spec["final_dir"])
    if change:
        result["batch_change"] = change
    if rank() == 0:
        atomic_write_json(step_dir / RESULT_FILE, result)
    return result


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m engine.backends.train_entry STEP_DIR", file=sys.stderr)
        return 2
    try:
        run(Path(argv[0]))
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        _close_distributed()
    return 0


def _close_distributed() -> None:
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
