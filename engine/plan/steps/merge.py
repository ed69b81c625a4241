"""The `merge` step executor: merge a LoRA adapter into its base and save a plain HF model (PEFT merge_and_unload).

The merged model's logits equal the adapter model's (within float tolerance); it loads with transformers alone.
Output: `steps/<id>/<save or merged>/` with weights, config and tokenizer; a Model artifact of kind `merged`.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.models.resolve import as_model_artifact, model_artifact
from engine.plan.context import StepContext
from engine.recipe.errors import EngineError


def auto_class_of(adapter_dir: Path) -> str:
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    return "AutoModelForSequenceClassification" if config.get("task_type") == "SEQ_CLS" else "AutoModelForCausalLM"


def merge_adapter(artifact: dict, out_dir: Path) -> Path:
    """Merge `artifact` (kind adapter, possibly stacked) into its base and save to `out_dir`."""
    from engine.methods.job import load_model, load_tokenizer

    if artifact.get("kind") != "adapter":
        raise EngineError(f"merge needs a LoRA adapter model, but {artifact.get('path')} is a {artifact.get('kind')} model; "
                          f"merge the output of a train step with `adapter: lora`")
    adapter_dir = Path(artifact["path"])
    if not (adapter_dir / "adapter_config.json").is_file():
        raise EngineError(f"merge: {adapter_dir} has no adapter_config.json (not a PEFT adapter directory)")
    auto = auto_class_of(adapter_dir)
    kwargs = {}
    if auto != "AutoModelForCausalLM":
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        kwargs = {"num_labels": adapter_num_labels(adapter_dir, config)}
    model = load_model(artifact, auto, trainable=False, **kwargs)
    merged = model.merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir)
    load_tokenizer(artifact).save_pretrained(out_dir)
    return out_dir


def adapter_num_labels(adapter_dir: Path, config: dict) -> int:
    from safetensors import safe_open

    weights = adapter_dir / "adapter_model.safetensors"
    with safe_open(str(weights), "pt") as f:
        for key in f.keys():
            if "modules_to_save" in key and key.endswith(("score.weight", "classifier.weight")):
                return f.get_slice(key).get_shape()[0]
    return 2


def run(ctx: StepContext) -> dict[str, dict]:
    artifact = as_model_artifact(ctx.param("model"), ctx.recipe_dir)
    out_dir = ctx.step_dir / (ctx.save_name or "merged")
    merge_adapter(artifact, out_dir)
    base = artifact
    while base.get("kind") == "adapter":
        base = base["base"]
    merged = model_artifact(out_dir, source={"source": "step", "step": ctx.step_id, "run_dir": str(ctx.run_dir)},
                            fingerprint=f"merged:{artifact.get('fingerprint')}", kind="merged",
                            merged_from=artifact["path"], base_fingerprint=base.get("fingerprint"))
    ctx.emit("merged", adapter=artifact["path"], model=str(out_dir))
    return {"model": merged}
