"""The train step's `adapter:` — lora, qlora (4/8-bit base, CUDA + bitsandbytes only) or full fine-tuning."""

from __future__ import annotations

import importlib.util
from typing import Any, Optional

from engine.recipe.errors import EngineError


def check_qlora() -> None:
    """QLoRA needs a CUDA GPU and bitsandbytes; say so plainly instead of failing inside bitsandbytes."""
    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (none is visible)")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package (pip install bitsandbytes)")
    if missing:
        raise EngineError(f"adapter qlora needs {' and '.join(missing)}; on this machine use `adapter: lora` "
                          f"(same adapters, unquantized base) or `adapter: full`")


def quantization_config(adapter: dict) -> Any:
    """BitsAndBytesConfig for qlora, None otherwise."""
    if adapter.get("type") != "qlora":
        return None
    check_qlora()
    import torch
    from transformers import BitsAndBytesConfig

    if adapter.get("bits", 4) == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def peft_config(adapter: dict, task_type: str = "CAUSAL_LM") -> Optional[Any]:
    """LoraConfig for lora/qlora, None for full."""
    if adapter.get("type") not in ("lora", "qlora"):
        return None
    from peft import LoraConfig

    modules_to_save = list(adapter.get("modules_to_save") or [])
    if task_type == "SEQ_CLS" and not modules_to_save:
        modules_to_save = None  # PEFT adds the classification head itself for SEQ_CLS
    return LoraConfig(r=adapter.get("r", 16), lora_alpha=adapter.get("alpha", 32), lora_dropout=adapter.get("dropout", 0.05),
                      target_modules=adapter.get("target_modules", "all-linear"), modules_to_save=modules_to_save,
                      task_type=task_type)


def prepare_full(model: Any, adapter: dict) -> Any:
    """Full fine-tuning: freeze the parameters whose names start with one of `freeze`."""
    prefixes = tuple(adapter.get("freeze") or ())
    if prefixes:
        frozen = 0
        for name, param in model.named_parameters():
            if name.startswith(prefixes):
                param.requires_grad_(False)
                frozen += 1
        if not frozen:
            names = [n for n, _ in model.named_parameters()][:5]
            raise EngineError(f"adapter full: `freeze` {list(prefixes)} matches no parameter; names look like {names}")
    return model


def model_for_training(job, auto_class: str = "AutoModelForCausalLM", **kwargs: Any) -> tuple[Any, Optional[Any]]:
    """(model, peft_config to hand to the TRL trainer) for the job's adapter."""
    from engine.methods.job import load_model, task_type_of

    adapter = job.adapter
    model = load_model(job.model, auto_class, quantization_config=quantization_config(adapter), **kwargs)
    if job.model.get("kind") == "adapter":
        if adapter.get("type") == "full":
            model = model.merge_and_unload()  # full fine-tuning of an adapter model: train the merged weights
            return prepare_full(model, adapter), None
        return model, None  # keep training the loaded adapter
    if adapter.get("type") == "full":
        return prepare_full(model, adapter), None
    if adapter.get("type") == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return model, peft_config(adapter, task_type_of(auto_class))
