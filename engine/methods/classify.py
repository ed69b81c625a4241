"""`method: classify` — sequence classification with transformers' Trainer (the CoBench DeBERTa router).

Input text is `text_fields` (one field, several joined by spaces, or two as a text pair); labels come from
`label_field` (integers, or strings mapped to ids in sorted order and saved as id2label). Dynamic padding per batch.
With `eval_data`, accuracy and F1 (binary for 2 labels, macro otherwise) are computed every epoch.
"""

from __future__ import annotations

from engine.methods.examples import classify_text
from engine.methods.job import TrainJob, load_model, load_tokenizer, read_rows
from engine.recipe.errors import EngineError

CONFIG = "transformers:TrainingArguments"


def config_fields(params: dict) -> dict:
    return {"remove_unused_columns": True}


def label_ids(rows: list[dict], field: str, num_labels: int) -> dict:
    """Label value -> id: integers map to themselves, strings to their sorted position."""
    values = {r.get(field) for r in rows}
    if None in values:
        raise EngineError(f"classify: some rows have no `{field}` (set `label_field:`)")
    if all(isinstance(v, bool) or isinstance(v, int) for v in values):
        bad = sorted(v for v in values if not 0 <= int(v) < num_labels)
        if bad:
            raise EngineError(f"classify: labels {bad} are outside 0..{num_labels - 1}; set `num_labels:`")
        return {v: int(v) for v in values}
    names = sorted(str(v) for v in values)
    if len(names) > num_labels:
        raise EngineError(f"classify: {len(names)} distinct labels ({', '.join(names[:6])}...) but num_labels is {num_labels}")
    return {name: i for i, name in enumerate(names)}


def compute_metrics(num_labels: int, wanted: tuple = ("accuracy", "f1")):
    """The validation metrics the recipe asks for (`metrics:`), from the logits of the eval set."""
    def metrics(prediction) -> dict:
        import numpy as np
        from sklearn.metrics import accuracy_score, f1_score

        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = np.argmax(logits, axis=-1)
        labels = prediction.label_ids
        average = "binary" if num_labels == 2 else "macro"
        out = {}
        if "accuracy" in wanted:
            out["accuracy"] = float(accuracy_score(labels, predicted))
        if "f1" in wanted:
            out["f1"] = float(f1_score(labels, predicted, average=average, zero_division=0))
        return out
    return metrics


def build_trainer(job: TrainJob):
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from engine.methods.adapter import peft_config, prepare_full, quantization_config

    params = job.params
    num_labels = int(params.get("num_labels", 2))
    fields = list(params.get("text_fields") or ["question"])
    label_field = params.get("label_field", "label")
    max_length = params.get("max_length") or 512
    tokenizer = load_tokenizer(job.model)
    rows = read_rows(job.data_path)
    eval_rows = read_rows(job.eval_path) if job.eval_path else []
    mapping = label_ids(rows + eval_rows, label_field, num_labels)

    def encode(batch_rows: list[dict]):
        texts = [classify_text(r, fields) for r in batch_rows]
        firsts = [a for a, _ in texts]
        seconds = [b for _, b in texts] if len(fields) == 2 else None
        enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
        enc = {k: list(v) for k, v in enc.items()}
        enc["labels"] = [mapping[r[label_field]] if r[label_field] in mapping else mapping[str(r[label_field])]
                         for r in batch_rows]
        return Dataset.from_dict(enc)

    extra = {}
    if not all(isinstance(k, int) for k in mapping):
        extra = {"id2label": {i: n for n, i in mapping.items()}, "label2id": dict(mapping)}
    model = load_model(job.model, "AutoModelForSequenceClassification", num_labels=num_labels,
                       ignore_mismatched_sizes=True, quantization_config=quantization_config(job.adapter), **extra)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    adapter = job.adapter
    if job.model.get("kind") != "adapter":
        lora = peft_config(adapter, "SEQ_CLS")
        if lora is not None:
            from peft import get_peft_model

            model = get_peft_model(model, lora)
        else:
            model = prepare_full(model, adapter)
    return Trainer(model=model, args=TrainingArguments(**job.args), train_dataset=encode(rows),
                   eval_dataset=encode(eval_rows) if eval_rows else None, processing_class=tokenizer,
                   data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics(num_labels, tuple(params.get("metrics") or ("accuracy", "f1"))))
