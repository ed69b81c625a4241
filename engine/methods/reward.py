"""`method: reward` — a reward model (sequence classifier, one output) trained with TRL's RewardTrainer on pairs."""

from __future__ import annotations

from engine.methods.examples import load_step_template, preference_example
from engine.methods.job import TrainJob, load_tokenizer, read_rows, to_dataset

CONFIG = "trl:RewardConfig"


def config_fields(params: dict) -> dict:
    return {"max_length": params.get("max_length")}


def build_trainer(job: TrainJob):
    from trl import RewardConfig, RewardTrainer

    from engine.methods.adapter import model_for_training

    tokenizer = load_tokenizer(job.model)
    template = load_step_template(job.params.get("template"), job.recipe_dir)
    chat = bool(getattr(tokenizer, "chat_template", None))
    keep_margin = bool(job.params.get("margin"))

    def data(path):
        if not path:
            return None
        examples = [preference_example(r, template, chat) for r in read_rows(path)]
        if not keep_margin:
            for ex in examples:
                ex.pop("margin", None)
        return to_dataset(examples)

    model, peft = model_for_training(job, "AutoModelForSequenceClassification", num_labels=1, ignore_mismatched_sizes=True)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return RewardTrainer(model=model, args=RewardConfig(**job.args), train_dataset=data(job.data_path),
                         eval_dataset=data(job.eval_path), processing_class=tokenizer, peft_config=peft)
