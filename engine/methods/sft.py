"""`method: sft` — supervised fine-tuning with TRL's SFTTrainer (chat / completion / alpaca examples, see examples.py)."""

from __future__ import annotations

from engine.methods.examples import load_step_template, sft_examples
from engine.methods.job import TrainJob, load_tokenizer, read_rows, to_dataset

CONFIG = "trl:SFTConfig"


def config_fields(params: dict) -> dict:
    return {
        "max_length": params.get("max_length"),
        "packing": params.get("packing", False),
        "padding_free": params.get("padding_free", False),
        "completion_only_loss": params.get("completion_only_loss", True),
    }


def datasets_for(job: TrainJob, tokenizer):
    template = load_step_template(job.params.get("template"), job.recipe_dir)
    fmt = job.params.get("format", "auto")
    train = to_dataset(sft_examples(read_rows(job.data_path), template, fmt, tokenizer))
    evaluation = to_dataset(sft_examples(read_rows(job.eval_path), template, fmt, tokenizer)) if job.eval_path else None
    return train, evaluation


def build_trainer(job: TrainJob, trainer_class=None):
    from trl import SFTConfig, SFTTrainer

    from engine.methods.adapter import model_for_training

    tokenizer = load_tokenizer(job.model)
    train, evaluation = datasets_for(job, tokenizer)
    model, peft = model_for_training(job)
    args = dict(job.args)
    if "prompt" not in train.column_names:  # whole `messages` rows: no prompt/completion split to mask by
        args["completion_only_loss"] = None
    cls = trainer_class or SFTTrainer
    return cls(model=model, args=SFTConfig(**args), train_dataset=train, eval_dataset=evaluation,
               processing_class=tokenizer, peft_config=peft)
