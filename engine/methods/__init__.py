"""Training methods, one module each (CONFIG, config_fields, build_trainer: see engine/methods/job.py)."""

from engine.catalog import METHODS

for _name, _help in {
    "sft": "supervised fine-tuning",
    "dpo": "direct preference optimisation",
    "grpo": "group relative policy optimisation (online)",
    "distill": "knowledge distillation (logits or sequence-level)",
    "classify": "sequence classification",
    "reward": "reward model on preference pairs",
}.items():
    METHODS.register(_name, f"engine.methods.{_name}", help=_help)
