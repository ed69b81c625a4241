"""`method: dpo` — direct preference optimisation with TRL's DPOTrainer on {prompt, chosen, rejected} rows."""

from __future__ import annotations

from engine.methods.examples import load_step_template, preference_example
from engine.methods.job import TrainJob, load_model, load_tokenizer, read_rows, to_dataset

CONFIG = "trl:DPOConfig"


def config_fields(params: dict) -> dict:
    return {"beta": params.get("beta", 0.1), "loss_type": [params.get("loss_type", "sigmoid")],
            "max_length": params.get("max_length")}


def build_trainer(job: TrainJob):
    from trl import DPOConfig, DPOTrainer

    from engine.methods.adapter import model_for_training

    tokenizer = load_tokenizer(job.model)
    template = load_step_template(job.params.get("template"), job.recipe_dir)
    chat = bool(getattr(tokenizer, "chat_template", None))

    def data(path):
        return to_dataset([preference_example(r, template, chat) for r in read_rows(path)]) if path else None

    model, peft = model_for_training(job)
    reference = load_model(job.reference, trainable=False) if job.reference else None
    return DPOTrainer(model=model, ref_model=reference, args=DPOConfig(**job.args), train_dataset=data(job.data_path),
                      eval_dataset=data(job.eval_path), processing_class=tokenizer, peft_config=peft)
