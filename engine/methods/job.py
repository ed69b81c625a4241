"""What a method needs to build its trainer, and the loading every method shares (models, tokenizer, rows).

A method module (engine/methods/<name>.py) has:
    CONFIG = "trl:SFTConfig"                 the config dataclass its arguments render into ("module:Class")
    config_fields(params) -> dict            its own config fields from the step params (pure)
    build_trainer(job: TrainJob) -> Trainer  the transformers/TRL trainer, ready to `train()`
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from engine.recipe.errors import EngineError


@dataclass
class TrainJob:
    method: str
    params: dict                      # the step's resolved params (plan entry)
    model: dict                       # Model artifact to train (base, merged, or an adapter to keep training)
    data_path: Path                   # JSONL of common records
    args: dict                        # rendered config fields (trl_args.json)
    step_dir: Path
    eval_path: Optional[Path] = None
    teacher: Optional[dict] = None    # Model artifact (distill)
    reference: Optional[dict] = None  # Model artifact (dpo)
    reward_funcs: list[Callable] = field(default_factory=list)  # extra GRPO rewards given in code (tests, API)
    recipe_dir: Optional[Path] = None

    @property
    def adapter(self) -> dict:
        return self.params.get("adapter") or {"type": "full"}


def config_class(spec: str) -> type:
    """`"trl:SFTConfig"` -> the class."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def make_config(job: TrainJob, spec: str) -> Any:
    return config_class(spec)(**job.args)


def read_rows(path: Path | str) -> list[dict]:
    """Rows of a JSONL file (the Dataset artifacts training receives)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise EngineError(f"{path}:{i}: not a JSON line ({exc})") from None
    if not rows:
        raise EngineError(f"{path}: no training rows; check the data source and any `select`/`filter` before training")
    return rows


def to_dataset(examples: list[dict]):
    """A `datasets.Dataset` from example dicts; columns Arrow cannot type (mixed str/list, ...) become JSON text."""
    from datasets import Dataset

    columns: dict[str, None] = {}
    for ex in examples:  # every row's fields: Dataset.from_list takes the columns of the first row only
        columns.update(dict.fromkeys(ex))
    examples = [{k: ex.get(k) for k in columns} for ex in examples]
    try:
        return Dataset.from_list(examples)
    except Exception:  # noqa: BLE001 - pyarrow raises several types for mixed columns
        keep = {"prompt", "completion", "chosen", "rejected", "messages", "text", "label"}
        fixed = [{k: (v if k in keep or v is None or isinstance(v, (str, int, float, bool)) else json.dumps(v))
                  for k, v in ex.items()} for ex in examples]
        return Dataset.from_list(fixed)


def base_dir(artifact: dict) -> Path:
    from engine.models.resolve import base_of

    return Path(base_of(artifact)["path"])


def source_option(artifact: dict, name: str, default: Any = None) -> Any:
    from engine.models.resolve import base_of

    return (base_of(artifact).get("source") or {}).get(name, default)


def load_tokenizer(artifact: dict, *, padding_side: Optional[str] = None):
    """The model's tokenizer (an adapter dir's own when it saved one), with the recipe's chat template override and
    a pad token (eos when the tokenizer has none)."""
    from transformers import AutoTokenizer

    from engine.models.resolve import base_of

    # the recipe's `tokenizer:` on this model, else the tokenizer saved with it (an adapter's, a trained model's),
    # else its base's override or the base directory's own
    path = Path(artifact["path"])
    where = artifact.get("tokenizer") or (path if (path / "tokenizer_config.json").is_file() else None) \
        or base_of(artifact).get("tokenizer") or base_dir(artifact)
    tok = AutoTokenizer.from_pretrained(where, trust_remote_code=bool(source_option(artifact, "trust_remote_code")))
    override = source_option(artifact, "chat_template")
    if override:
        tok.chat_template = override
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    if padding_side:
        tok.padding_side = padding_side
    return tok


def torch_dtype(artifact: dict):
    """Weights dtype for training: the recipe's `dtype`, or float32 (`auto`; mixed precision is the trainer's)."""
    import torch

    name = source_option(artifact, "dtype", "auto")
    return {"auto": torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_model(artifact: dict, auto_class: str = "AutoModelForCausalLM", *, trainable: bool = True,
               quantization_config: Any = None, **kwargs: Any):
    """The model of an artifact; an adapter is loaded onto its base (trainable when `trainable`)."""
    import transformers

    cls = getattr(transformers, auto_class)
    base = base_dir(artifact)
    model = cls.from_pretrained(base, dtype=torch_dtype(artifact), quantization_config=quantization_config,
                                trust_remote_code=bool(source_option(artifact, "trust_remote_code")), **kwargs)
    if artifact.get("kind") == "adapter":
        from peft import PeftModel

        chain = []
        a = artifact
        while a.get("kind") == "adapter":
            chain.append(a)
            a = a["base"]
        for i, adapter in enumerate(reversed(chain)):  # stacked adapters: all but the last are merged in
            model = PeftModel.from_pretrained(model, adapter["path"], is_trainable=trainable and i == len(chain) - 1)
            if i < len(chain) - 1:
                model = model.merge_and_unload()
    return model


def task_type_of(auto_class: str) -> str:
    return "SEQ_CLS" if "SequenceClassification" in auto_class else "CAUSAL_LM"
