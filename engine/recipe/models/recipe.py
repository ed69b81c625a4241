"""The top level: four kinds (train, eval, loop, pipeline) over one step-graph IR."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Discriminator, Field, Tag

from engine.recipe.models.base import Block
from engine.recipe.models.data import DataBlock
from engine.recipe.models.launch import Launch
from engine.recipe.models.model_sources import AnyModel
from engine.recipe.models.steps import Evaluate, Step, Suite
from engine.recipe.models.train import TrainStep

FORMAT_VERSION = 1


class Tracking(Block):
    """Where training metrics go besides events.jsonl."""

    backends: list[Literal["tensorboard", "wandb", "mlflow", "none"]] = Field(default_factory=lambda: ["tensorboard"])
    project: Optional[str] = Field(None, description="wandb project / mlflow experiment name.")
    mode: Literal["online", "offline"] = Field("offline", description="wandb mode.")
    tracking_uri: Optional[str] = Field(None, description="mlflow tracking URI (default: a directory in the run).")


class Output(Block):
    """Where runs go and how they are named."""

    root: Optional[str] = Field(None, description="Runs root (default $RECIPE_ENGINE_RUNS or ./runs).")
    run_name: Optional[str] = Field(
        None, description="Jinja template of the run's directory name, over `name`, `model`, `vars`, `timestamp`, "
        "e.g. `{{ model }}_{{ vars.dataset }}_{{ vars.label_mode }}_lr{{ vars.lr }}_{{ timestamp }}`.",
    )
    retain: Optional[int] = Field(None, ge=1, description="Keep only the newest N model checkpoints of a loop.")


class _Common(Block):
    recipe: Optional[Literal[1]] = Field(None, description="Recipe format version (required at the top level).")
    name: Optional[str] = Field(None, description="Recipe name (run directories are grouped by it).")
    description: str = ""
    vars: dict[str, Any] = Field(default_factory=dict, description="User parameters, referenced as `${vars.NAME}`.")
    seed: int = Field(0, description="Run seed; data, sampling and training seeds derive from it.")
    model: Optional[AnyModel] = Field(None, description="The base model, referenced as `${model}`.")
    data: Optional[DataBlock] = None
    suites: dict[str, Suite] = Field(default_factory=dict, description="Named evaluation suites.")
    launch: Launch = Field(default_factory=Launch)
    tracking: Tracking = Field(default_factory=Tracking)
    output: Output = Field(default_factory=Output)
    outputs: dict[str, str] = Field(default_factory=dict, description="Names other recipes/stages may reference -> `${...}`.")


class TrainRecipe(_Common):
    """One training step (sugar for a one-step graph)."""

    kind: Literal["train"]
    train: TrainStep


class EvalRecipe(_Common):
    """One evaluation step (sugar for a one-step graph)."""

    kind: Literal["eval"]
    evaluate: Evaluate


class Carry(Block):
    """A value carried across loop epochs (e.g. the policy model)."""

    init: str = Field(description="Value in the first epoch, e.g. `${model}`.")
    next: str = Field(description="Value for the next epoch, e.g. `${steps.train.model}`.")


class Baseline(Block):
    """Epoch 0: the body runs once before training with these steps skipped (the seed's "Step 0")."""

    skip: list[str] = Field(default_factory=list)


class Plateau(Block):
    metric: str = Field(description="A summary column or `${steps.NAME.metrics.KEY}`.")
    patience: int = Field(2, ge=1)
    min_delta: float = Field(0.0, ge=0)
    mode: Literal["max", "min"] = "max"


class Stop(Block):
    plateau: Optional[Plateau] = None
    on_gate_failure: bool = Field(True, description="Stop the loop when a step's gate fails.")
    on_empty: Literal["skip", "stop"] = Field("skip", description="An epoch with nothing to train: skip its training (recorded) or stop.")


class Summary(Block):
    """The per-epoch table: column title -> `${...}` value."""

    columns: dict[str, str] = Field(default_factory=dict)
    save: str = Field("summary", description="Base name of summary.md / summary.json / summary.png.")


class Loop(Block):
    epochs: int = Field(ge=1, description="Training epochs after the baseline epoch 0.")
    start_epoch: int = Field(0, ge=0, description="First epoch to run (resume an experiment; earlier epochs are reused).")
    carry: dict[str, Carry] = Field(default_factory=dict)
    baseline: Optional[Baseline] = Field(None, description="Run an epoch 0 with these steps skipped.")
    steps: dict[str, Step] = Field(
        min_length=1, description="The loop body: step name -> step (`use:` names its type), run in dependency order every epoch."
    )
    summary: Optional[Summary] = None
    stop: Stop = Field(default_factory=Stop)


class LoopRecipe(_Common):
    """A body of steps repeated over epochs."""

    kind: Literal["loop"]
    loop: Loop


class RecipeStage(Block):
    """A stage that runs another recipe file with overrides."""

    recipe: str = Field(description="Path relative to this file, or a shipped recipe name.")
    profile: list[str] = Field(default_factory=list)
    set: dict[str, Any] = Field(default_factory=dict, description="Dotted key -> value overrides (like --set).")
    when: Optional[str] = None


def _stage_kind(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        if "use" in value:
            return "step"
        if "kind" in value:
            return "inline"
        if "recipe" in value:
            return "file"
    return None


class InlineTrain(TrainRecipe):
    when: Optional[str] = None


class InlineEval(EvalRecipe):
    when: Optional[str] = None


class InlineLoop(LoopRecipe):
    when: Optional[str] = None


InlineRecipe = Annotated[Union[InlineTrain, InlineEval, InlineLoop], Field(discriminator="kind")]

Stage = Annotated[
    Union[Annotated[Step, Tag("step")], Annotated[InlineRecipe, Tag("inline")], Annotated[RecipeStage, Tag("file")]],
    Discriminator(_stage_kind, custom_error_type="stage",
                  custom_error_message="a stage is a step (`use:`), an inline recipe (`kind:`) or a file (`recipe: PATH`)"),
]


class PipelineRecipe(_Common):
    """Ordered stages, each a step, an inline recipe, or another recipe file; chained through `outputs:`."""

    kind: Literal["pipeline"]
    stages: dict[str, Stage] = Field(min_length=1)


Recipe = Annotated[Union[TrainRecipe, EvalRecipe, LoopRecipe, PipelineRecipe], Field(discriminator="kind")]
KINDS = ("train", "eval", "loop", "pipeline")
