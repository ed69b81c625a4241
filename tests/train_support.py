"""Helpers for the training tests: compile a one-step train recipe and build the StepContext an executor gets,
and the CPU-only distributed workaround (accelerate believes a GPU-less machine has one process).

The workaround is for tests only (STACK.md): `cpu_distributed_env` puts a `sitecustomize.py` on PYTHONPATH that
makes accelerate's backend choice gloo / MULTI_CPU when no CUDA is present and LOCAL_RANK is set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from engine.models.resolve import resolve_model
from engine.plan.compile import compile_recipe
from engine.plan.context import StepContext
from engine.recipe.loader import load_recipe
from engine.recipe.validate import validate
from engine.runs.events import EventLog


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def dataset(path: Path, rows: Optional[int] = None) -> dict:
    return {"type": "Dataset", "path": str(path), "rows": rows or sum(1 for _ in open(path)), "fingerprint": str(path)}


def train_context(tmp: Path, train: dict, model: dict, rows: list[dict], *, eval_rows: Optional[list[dict]] = None,
                  launch: Optional[dict] = None, vars: Optional[dict] = None, save: Optional[str] = None,
                  extra_inputs: Optional[dict] = None, step_id: str = "train") -> StepContext:
    """Compile `{kind: train, train: ...}` over local JSONL data and return the train step's context."""
    tmp = Path(tmp)
    sources = {"train": {"source": "jsonl", "path": str(write_jsonl(tmp / "data" / "train.jsonl", rows))}}
    step = {"data": "${data.train}", **train}
    if eval_rows is not None:
        sources["val"] = {"source": "jsonl", "path": str(write_jsonl(tmp / "data" / "val.jsonl", eval_rows))}
        step["eval_data"] = "${data.val}"
    recipe = {"recipe": 1, "kind": "train", "name": "test", "model": model, "data": {"sources": sources},
              "launch": launch or {"gpus": 0}, "vars": vars or {}, "train": step}
    path = tmp / "recipe.yaml"
    path.write_text(json.dumps(recipe, indent=1), encoding="utf-8")
    plan = compile_recipe(validate(load_recipe(path)))
    entry = plan["graph"]["steps"]["train"]
    inputs: dict[str, Any] = {}
    for key, ref in entry["inputs"].items():
        if ref == "${model}":
            inputs[key] = resolve_model(plan["model"], tmp)
        elif ref.startswith("${data."):
            inputs[key] = dataset(Path(sources[ref[7:-1]]["path"]))
    inputs.update(extra_inputs or {})
    run_dir = tmp / "run"
    step_dir = run_dir / "steps" / step_id
    step_dir.mkdir(parents=True, exist_ok=True)
    return StepContext(step_id=step_id, step_dir=step_dir, step=entry, inputs=inputs, plan=plan, run_dir=run_dir,
                       recipe_dir=tmp, seed=plan.get("seed", 0), save_name=save, events=EventLog(run_dir / "events.jsonl"))


SITECUSTOMIZE = '''\
# Test-only: on a machine without CUDA, accelerate picks a single-process setup even under torchrun; make it
# use gloo / MULTI_CPU when LOCAL_RANK is set (STACK.md, "Multi-process and DeepSpeed on CPU").
import os
if "LOCAL_RANK" in os.environ:
    try:
        import torch
        from accelerate import state as _state
        from accelerate.utils import DistributedType

        _orig = _state.PartialState._prepare_backend

        def _prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
            if not torch.cuda.is_available():
                return "gloo", DistributedType.MULTI_CPU
            return _orig(self, cpu, sagemaker_dp, backend)

        _state.PartialState._prepare_backend = _prepare_backend
    except Exception:  # pragma: no cover - best effort in a test helper
        pass
'''


def cpu_distributed_env(tmp: Path) -> dict[str, str]:
    """Environment (PYTHONPATH) that applies the test-only accelerate patch in every launched process."""
    patch_dir = Path(tmp) / "cpu_dist_patch"
    patch_dir.mkdir(parents=True, exist_ok=True)
    (patch_dir / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(patch_dir), os.environ.get("PYTHONPATH")]))}


def changed(before: dict, after_dir: Path, auto: str = "AutoModelForCausalLM") -> float:
    """Largest absolute change of any parameter between a state dict and a saved model."""
    import transformers

    after = getattr(transformers, auto).from_pretrained(after_dir).state_dict()
    return max((after[k].float() - v.float()).abs().max().item() for k, v in before.items() if k in after)
