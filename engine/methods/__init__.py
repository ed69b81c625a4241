"""Training methods, one module each; they register here."""

from engine.catalog import METHODS

for _name, _help in {
    "sft": "supervised fine-tuning",
    "dpo": "direct preference optimisation",
    "grpo": "group relative policy optimisation (online)",
    "distill": "knowledge distillation (logits or sequence-level)",
    "classify": "sequence classification",
    "reward": "reward model on preference pairs",
}.items():
    METHODS.declare(_name, help=_help)
