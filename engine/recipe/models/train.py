"""The `train` step: common fields plus one small model per method (discriminated on `method`)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from engine.recipe.models.base import Block
from engine.recipe.models.common import ArtifactType, Ref, ScorerChoice, TemplateSpec
from engine.recipe.models.model_sources import ModelSpec

# --- adapters ------------------------------------------------------------------------------------------


class _LoraParams(Block):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha.")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Union[Literal["all-linear"], list[str]] = Field("all-linear", description="Modules to adapt.")
    modules_to_save: list[str] = Field(default_factory=list, description="Extra modules trained in full and saved.")


class LoraAdapter(_LoraParams):
    """Low-rank adapters on a frozen base (PEFT)."""

    type: Literal["lora"]


class QLoraAdapter(_LoraParams):
    """LoRA on a 4/8-bit quantized base (needs CUDA and bitsandbytes)."""

    type: Literal["qlora"]
    bits: Literal[4, 8] = 4


class FullAdapter(Block):
    """Full fine-tuning: every parameter trains (except `freeze`)."""

    type: Literal["full"]
    freeze: list[str] = Field(default_factory=list, description="Parameter name prefixes to keep frozen.")


def _adapter_shorthand(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


Adapter = Annotated[
    Union[LoraAdapter, QLoraAdapter, FullAdapter], Field(discriminator="type"), BeforeValidator(_adapter_shorthand)
]
ADAPTER_TYPES = ("lora", "qlora", "full")

# --- common train fields -------------------------------------------------------------------------------


class Checkpoints(Block):
    """When checkpoints are written inside the step's output, and how many are kept."""

    every: Literal["epoch", "steps", "none"] = Field("none", description="Save a checkpoint every epoch, every N steps, or only at the end.")
    steps: Optional[int] = Field(None, ge=1, description="N, for `every: steps`.")
    name: str = Field("checkpoint-{step}", description="Directory name; `{epoch}` and `{step}` are filled in (e.g. `checkpoint_epoch_{epoch}`).")
    retain: Optional[int] = Field(None, ge=1, description="Keep only the newest N checkpoints.")

    @model_validator(mode="after")
    def _steps_given(self) -> "Checkpoints":
        if self.every == "steps" and self.steps is None:
            raise ValueError("`every: steps` needs `steps: N`")
        return self


AXOLOTL_UNREAD = ("trainer_args", "checkpoints", "packing", "padding_free", "completion_only_loss", "loss_type", "reference",
                  "scale_rewards", "generator")


class _TrainCommon(Block):
    use: Literal["train"] = "train"
    when: Optional[str] = Field(None, description="Run only when this Jinja expression is true, e.g. `{{ vars.adapter == 'lora' }}`.")
    model: Optional[ModelSpec] = Field(None, description="Model to train; default the recipe's `model`.")
    data: Ref = Field(description="Training data, e.g. `${data.train}` or `${steps.select.rows}`.")
    eval_data: Optional[Ref] = Field(None, description="Validation data evaluated during training.")
    template: Optional[TemplateSpec] = Field(None, description="Prompt template turning rows into training examples.")
    backend: Literal["trl", "axolotl"] = Field("trl", description="`trl` in this environment, or `axolotl` in its side environment.")
    adapter: Adapter = Field(default_factory=lambda: FullAdapter(type="full"), description="`lora`, `qlora` or `full` (a name or a mapping with options).")
    epochs: float = Field(1.0, gt=0, description="Passes over the data.")
    max_steps: Optional[int] = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(8, ge=1, description="Per-device batch size.")
    global_batch_size: Optional[int] = Field(None, ge=1, description="Examples per optimizer step over all devices; gradient accumulation is derived.")
    gradient_accumulation: Optional[int] = Field(None, ge=1, description="Given directly instead of `global_batch_size`.")
    learning_rate: float = Field(2.0e-5, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    max_length: Optional[int] = Field(1024, ge=8, description="Truncate examples to this many tokens.")
    gradient_checkpointing: bool = False
    seed: Optional[int] = Field(None, description="Training seed (default: the recipe seed).")
    logging_steps: int = Field(10, ge=1)
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)
    save: Optional[str] = Field(None, description="Directory name of the final model inside the step output, e.g. `epoch_${epoch}`.")
    trainer_args: dict[str, Any] = Field(default_factory=dict, description="Extra TRL config fields, checked against the installed TRL at render.")
    axolotl: dict[str, Any] = Field(default_factory=dict, description="Raw Axolotl keys (backend `axolotl`), checked against Axolotl's schema.")

    OUTPUTS: ClassVar[dict[str, ArtifactType]] = {"model": ArtifactType.model, "metrics": ArtifactType.metrics}

    @field_validator("axolotl")
    @classmethod
    def _axolotl_block_needs_axolotl(cls, value: dict, info: ValidationInfo) -> dict:
        if value and info.data.get("backend", "trl") == "trl":
            raise ValueError("`axolotl:` keys are read by `backend: axolotl` only — this step trains with TRL; set "
                             "`backend: axolotl`, or give TRL fields (or `trainer_args:`) instead")
        return value

    @field_validator(*AXOLOTL_UNREAD, check_fields=False)
    @classmethod
    def _read_by_axolotl(cls, value: Any, info: ValidationInfo) -> Any:
        """Options the Axolotl backend would not read are errors, not silent no-ops (only given values get here)."""
        if info.data.get("backend") == "axolotl":
            raise ValueError(f"backend axolotl does not read `{info.field_name}` — the Axolotl config is rendered from "
                             f"the common fields; give Axolotl's own keys under `axolotl:` (e.g. `sample_packing: true`, "
                             f"`save_strategy: epoch`), or use `backend: trl`")
        return value

    def outputs(self) -> dict[str, ArtifactType]:
        return dict(self.OUTPUTS)

    def reference_types(self) -> dict[str, ArtifactType]:
        """Expected artifact type of each field that may hold a reference."""
        return {"model": ArtifactType.model, "data": ArtifactType.dataset, "eval_data": ArtifactType.dataset}


class SFT(_TrainCommon):
    """Supervised fine-tuning (TRL SFTTrainer)."""

    method: Literal["sft"]
    format: Literal["auto", "chat", "completion", "alpaca"] = Field(
        "auto", description="`chat`: messages through the chat template; `completion`: plain prompt + completion; `alpaca`: instruction/response; `auto`: chat when the tokenizer has a chat template."
    )
    completion_only_loss: bool = Field(True, description="Loss on the completion (assistant) tokens only.")
    packing: bool = False
    padding_free: bool = False


class DPO(_TrainCommon):
    """Direct preference optimisation on {prompt, chosen, rejected} rows."""

    method: Literal["dpo"]
    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    reference: Optional[ModelSpec] = Field(None, description="Reference model; default a frozen copy of `model`.")

    def reference_types(self) -> dict[str, ArtifactType]:
        return {**super().reference_types(), "reference": ArtifactType.model}


class Reward(Block):
    """One reward term: scorers applied to each row routed by its `domain`/`source`, scaled by `weight`."""

    scorer: ScorerChoice
    weight: float = 1.0
    metric: Optional[str] = Field(None, description="Which of the scorer's values is the reward (default its main score).")


class Judge(Block):
    """An LLM judge reward term."""

    model: ModelSpec = Field(description="The judge (often an `endpoint`).")
    template: TemplateSpec = Field("judge/rubric", description="Rubric prompt; its reply must contain a score.")
    weight: float = 1.0
    scale: tuple[float, float] = Field((0.0, 10.0), description="Range of the judge's score, mapped to [0, 1].")
    concurrency: int = Field(8, ge=1)


class GRPO(_TrainCommon):
    """Group relative policy optimisation, online (no replay)."""

    method: Literal["grpo"]
    num_generations: int = Field(8, ge=2, description="Completions per prompt (the group).")
    max_completion_length: int = Field(256, ge=1)
    max_length: Optional[int] = Field(
        None, ge=8, description="Prompt + completion tokens: prompts longer than `max_length - max_completion_length` "
        "are left out (listed in overlong_train.json). Default: no limit.")
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.0, ge=0, description="KL coefficient.")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = "dapo"
    scale_rewards: bool = True
    rewards: list[Reward] = Field(min_length=1, description="Reward terms; each row is scored by the scorers of its domain.")
    judge: Optional[Judge] = None
    generator: Literal["transformers", "vllm"] = Field("transformers", description="Rollout engine (vLLM when available).")
    reward_code: list[str] = Field(default_factory=list, description="`module:function` Python rewards (runs your code: listed by validate).")

    def reference_types(self) -> dict[str, ArtifactType]:
        return {**super().reference_types(), "judge.model": (ArtifactType.model, ArtifactType.endpoint)}


class Distill(_TrainCommon):
    """Knowledge distillation: from a teacher's logits, or sequence-level from teacher outputs."""

    method: Literal["distill"]
    teacher: ModelSpec = Field(description="Teacher model (`logits`), or the producer of `data` (`sequence`).")
    mode: Literal["logits", "sequence"] = "logits"
    temperature: float = Field(1.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the distillation loss vs the label loss.")

    def reference_types(self) -> dict:
        # sequence-level: `data` may be a collect step's Samples (the teacher's replies to train on)
        return {**super().reference_types(), "teacher": ArtifactType.model,
                "data": (ArtifactType.dataset, ArtifactType.samples)}


class Classify(_TrainCommon):
    """Sequence classification (e.g. the CoBench DeBERTa router)."""

    method: Literal["classify"]
    num_labels: int = Field(2, ge=2)
    text_fields: list[str] = Field(default_factory=lambda: ["question"], description="Fields joined as the input; two fields form a text pair.")
    label_field: str = "label"
    metrics: list[Literal["accuracy", "f1"]] = Field(default_factory=lambda: ["accuracy", "f1"],
                                                     description="Validation metrics computed each epoch with `eval_data`.")

    @field_validator("template")
    @classmethod
    def _no_template(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("classify reads its input from `text_fields:`, not from a prompt template — remove "
                             "`template:` and name the fields, e.g. `text_fields: [question, llm_id]`")
        return value


class RewardModel(_TrainCommon):
    """A reward model trained on preference pairs."""

    method: Literal["reward"]
    margin: bool = Field(False, description="Use a `margin` column when present.")


TrainStep = Annotated[Union[SFT, DPO, GRPO, Distill, Classify, RewardModel], Field(discriminator="method")]
METHODS = ("sft", "dpo", "grpo", "distill", "classify", "reward")
