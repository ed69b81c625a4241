"""`method: distill` — knowledge distillation into the student.

`mode: logits`: SFT examples (as sft.py), loss = alpha · T² · KL(teacher ‖ student at temperature T) over the
completion tokens + (1 − alpha) · cross-entropy on the targets. The teacher runs frozen beside the student and
must share its vocabulary. (TRL 1.16's DistillationTrainer is on-policy — the student generates — which is a
different method; this is classic supervised KD.)
`mode: sequence`: plain SFT on the rows, which hold the teacher's outputs: rows from a `collect` step of the
teacher (with `samples`) train on the teacher's first non-empty sample as `response` (the target of templates
such as tutoring/socratic), written to `teacher_outputs.jsonl` in the step directory; other rows as they are.
"""

from __future__ import annotations

from engine.methods import sft
from engine.methods.job import TrainJob, load_model
from engine.recipe.errors import EngineError

CONFIG = "trl:SFTConfig"


def config_fields(params: dict) -> dict:
    return {"max_length": params.get("max_length"), "completion_only_loss": True}


def build_trainer(job: TrainJob):
    if job.params.get("mode", "logits") == "sequence":
        return sft.build_trainer(_with_teacher_outputs(job))
    if job.teacher is None:
        raise EngineError("distill mode logits needs `teacher:` (a model sharing the student's tokenizer)")
    teacher = load_model(job.teacher, trainable=False).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    trainer = sft.build_trainer(job, trainer_class=_trainer_class())
    student_vocab = trainer.model.get_output_embeddings().weight.shape[0]
    teacher_vocab = teacher.get_output_embeddings().weight.shape[0]
    if student_vocab != teacher_vocab:
        raise EngineError(f"distill: teacher vocabulary ({teacher_vocab}) differs from the student's ({student_vocab}); "
                          f"logits distillation needs the same tokenizer — use `mode: sequence` instead")
    trainer.teacher = teacher
    trainer.distill_temperature = float(job.params.get("temperature", 1.0))
    trainer.distill_alpha = float(job.params.get("alpha", 0.5))
    return trainer


def distill_loss(student_logits, teacher_logits, labels, temperature: float):
    """Mean over completion tokens of T² · KL(teacher ‖ student), both at temperature T (logits not yet shifted)."""
    import torch.nn.functional as F

    s = student_logits[:, :-1].float() / temperature
    t = teacher_logits[:, :-1].float() / temperature
    mask = (labels[:, 1:] != -100).float()
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="none").sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1.0) * temperature**2


_CLASS = None


def _trainer_class():
    global _CLASS
    if _CLASS is None:
        import torch
        from trl import SFTTrainer

        class LogitsDistillationTrainer(SFTTrainer):
            """SFTTrainer whose loss mixes the KL to a frozen teacher's logits with the label loss."""

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                labels = inputs["labels"]
                feed = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
                outputs = model(**feed, labels=labels)
                if next(self.teacher.parameters()).device != outputs.logits.device:
                    self.teacher.to(outputs.logits.device)
                with torch.no_grad():
                    teacher_logits = self.teacher(**feed).logits
                kd = distill_loss(outputs.logits, teacher_logits, labels, self.distill_temperature)
                loss = self.distill_alpha * kd + (1 - self.distill_alpha) * outputs.loss
                return (loss, outputs) if return_outputs else loss

        _CLASS = LogitsDistillationTrainer
    return _CLASS


def _with_teacher_outputs(job: TrainJob) -> TrainJob:
    """Rows collected from the teacher (`samples`) get its first non-empty sample as `response`."""
    import dataclasses
    import json

    from engine.methods.job import read_rows

    rows = read_rows(job.data_path)
    if not any("samples" in row for row in rows):
        return job
    out, dropped = [], 0
    for row in rows:
        reply = next((s for s in row.get("samples") or [] if isinstance(s, str) and s.strip()), None)
        if reply is None:
            dropped += 1
            continue
        out.append({k: v for k, v in row.items() if k not in ("samples", "finish_reasons", "errors")} | {"response": reply})
    if not out:
        raise EngineError(f"distill: none of the {len(rows)} teacher rows has a non-empty sample to train on")
    path = job.step_dir / "teacher_outputs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for row in out:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return dataclasses.replace(job, data_path=path)
