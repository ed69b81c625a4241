"""Every step type except `train` (see train.py). Each step declares its outputs and the types its references expect."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from engine.recipe.models.base import Block
from engine.recipe.models.common import ArtifactType, Ref, ScorerChoice, TemplateSpec
from engine.recipe.models.model_sources import ModelSpec
from engine.recipe.models.train import TrainStep

A = ArtifactType


class _Step(Block):
    when: Optional[str] = Field(None, description="Run only when this Jinja expression is true.")
    save: Optional[str] = Field(None, description="File or directory name of the main output inside the step's directory.")

    OUTPUTS: ClassVar[dict[str, ArtifactType]] = {}
    REFS: ClassVar[dict[str, ArtifactType]] = {}

    def outputs(self) -> dict[str, ArtifactType]:
        return dict(self.OUTPUTS)

    def reference_types(self) -> dict[str, ArtifactType]:
        return dict(self.REFS)


class _Generation(Block):
    generator: Literal["auto", "transformers", "vllm", "endpoint"] = Field("auto", description="Engine; `auto` picks vLLM when importable, `endpoint` for endpoint models.")
    n: int = Field(1, ge=1, description="Samples per prompt, drawn in one request.")
    temperature: float = Field(0.0, ge=0, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list, description="Stop strings.")
    batch_size: int = Field(16, ge=1)
    seed: Optional[int] = Field(None, description="Sampling seed (default: the recipe seed); per-row seeds derive from it.")
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    workers: int = Field(1, ge=1, description="Data-parallel generation processes.")


class Collect(_Step, _Generation):
    """Generate `n` answers per row with a model (the collect of collect → label → train)."""

    use: Literal["collect"]
    model: ModelSpec
    data: Ref
    template: TemplateSpec
    temperature: float = Field(0.7, ge=0)
    limit: Optional[int] = Field(None, ge=1)

    OUTPUTS = {"samples": A.samples}
    REFS = {"model": (A.model, A.endpoint), "data": A.dataset}


class Score(_Step):
    """Score generated samples; rows are routed by domain/source to their scorers."""

    use: Literal["score"]
    samples: Ref
    scorer: ScorerChoice
    args: dict[str, Any] = Field(default_factory=dict, description="Scorer options.")

    OUTPUTS = {"samples": A.samples, "metrics": A.metrics}
    REFS = {"samples": A.samples}


class CorrectIf(Block):
    metric: str = Field("correct", description="Scorer value deciding correctness, e.g. `em` or `f1`.")
    threshold: float = Field(1.0, description="A sample is correct when metric >= threshold.")


class AbilityThresholds(Block):
    can: float = Field(1.0, description="Share of correct samples at or above which the ability is `can`.")
    uncertain: float = Field(0.5, description="At or above this (and below `can`): `uncertain`; below: `cannot`.")

    @model_validator(mode="after")
    def _ordered(self) -> "AbilityThresholds":
        if not 0 <= self.uncertain <= self.can <= 1:
            raise ValueError("thresholds need 0 <= uncertain <= can <= 1")
        return self


class Label(_Step):
    """Turn scored samples into one labelled row per question (e.g. ability can/uncertain/cannot)."""

    use: Literal["label"]
    samples: Ref
    scorer: ScorerChoice
    correct_if: CorrectIf = Field(default_factory=CorrectIf)
    rule: Literal["ability"] = "ability"
    thresholds: AbilityThresholds = Field(default_factory=AbilityThresholds)
    mode: Literal["binary", "uncertainty"] = Field("binary", description="`binary`: yes/no; `uncertainty`: yes/uncertain/no.")
    binary_map: dict[Literal["can", "uncertain", "cannot"], Literal["yes", "no"]] = Field(
        default_factory=lambda: {"can": "yes", "uncertain": "no", "cannot": "no"},
        description="Ability -> judgment label in binary mode (recorded).",
    )

    OUTPUTS = {"rows": A.dataset, "metrics": A.metrics}
    REFS = {"samples": A.samples}


class Select(_Step):
    """Keep the rows where an expression holds (e.g. the judgment was wrong)."""

    use: Literal["select"]
    rows: Ref
    where: str = Field(description="Jinja expression over a row, e.g. `judgment != judgment_label`.")
    limit: Optional[int] = Field(None, ge=1)
    seed: Optional[int] = None

    OUTPUTS = {"rows": A.dataset}
    REFS = {"rows": A.dataset}


class Gate(Block):
    """Fail the step (and stop a loop) when a metric is too low or dropped too much against `compare_to`."""

    metric: str = Field(description="Dotted metric name, e.g. `gsm8k.accuracy`.")
    below: Optional[float] = None
    drops_more_than: Optional[float] = Field(None, ge=0, description="Absolute drop against the comparison baseline.")

    @model_validator(mode="after")
    def _one_condition(self) -> "Gate":
        if self.below is None and self.drops_more_than is None:
            raise ValueError("a gate needs `below` or `drops_more_than`")
        return self


class Judgment(Block):
    """How a judgment is read off the model: P(yes) from one forward pass, or the frequency over samples."""

    probability: Literal["logprobs", "samples"] = "logprobs"
    labels: list[str] = Field(default_factory=lambda: ["yes", "no"], description="Judgment answers, e.g. yes/no or yes/uncertain/no.")
    truth_field: str = Field("judgment_label", description="Row field holding the true judgment.")


class EvalTask(_Generation):
    """One task of a suite: data, prompt and scorers."""

    data: Ref
    template: Optional[TemplateSpec] = None
    scorer: ScorerChoice
    limit: Optional[int] = Field(None, ge=1, description="Evaluate the first N rows (e.g. 10 for a quick suite).")
    k: list[int] = Field(default_factory=lambda: [1], description="pass@k values for code scorers.")


class Suite(Block):
    """A named set of tasks."""

    description: str = ""
    tasks: dict[str, EvalTask] = Field(min_length=1)
    include: list[str] = Field(default_factory=list, description="Other suites whose tasks are added.")


class Evaluate(_Step, _Generation):
    """Evaluate a model or endpoint on data, a suite, or judgment; write per-row predictions and metrics."""

    use: Literal["evaluate"] = Field("evaluate", description="Optional under `kind: eval` (like `use: train` under `kind: train`).")
    model: Optional[ModelSpec] = Field(None, description="Model or endpoint; default the recipe's `model`.")
    data: Optional[Ref] = None
    template: Optional[TemplateSpec] = None
    scorer: Optional[ScorerChoice] = None
    suite: Optional[str] = Field(None, description="A suite from the recipe's `suites:`.")
    tasks: dict[str, EvalTask] = Field(default_factory=dict)
    judgment: Optional[Judgment] = None
    limit: Optional[int] = Field(None, ge=1)
    k: list[int] = Field(default_factory=lambda: [1])
    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples for 95% confidence intervals of the metrics (0 = none; a `compare_to` comparison resamples 1000 times when 0, as its verdicts need a CI).")
    compare_to: Optional[str] = Field(None, description="A run directory or `${steps.NAME.metrics}` to compare against.")
    fail_if: list[Gate] = Field(default_factory=list)
    results_name: Optional[str] = Field(None, description="Name of the results JSON (e.g. `qwen25-7b_results.json`).")

    OUTPUTS = {"metrics": A.metrics, "rows": A.dataset}
    REFS = {"model": (A.model, A.endpoint), "data": A.dataset}

    @field_validator("judgment")
    @classmethod
    def _judgment_scores_itself(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("scorer") not in (None, "judgment", ["judgment"]):
            raise ValueError("evaluate with `judgment:` scores the judgments itself — `scorer:` must be `judgment` or left "
                             "out; the answers' correctness comes from the rows' ability labels (a `label` step)")
        return value

    @model_validator(mode="after")
    def _something_to_evaluate(self) -> "Evaluate":
        given = [x for x in ("data", "suite", "tasks") if getattr(self, x)]
        if not given:
            raise ValueError("evaluate has nothing to evaluate — it needs exactly one of `data` (with `scorer`), `suite` "
                             "or `tasks`; add e.g. `data: ${data.test}` and `scorer: exact_match`, or `suite: NAME`")
        if len(given) > 1:
            both = " and ".join(f"`{x}`" for x in given)
            raise ValueError(f"evaluate has both {both} — it evaluates exactly one of `data` (with `scorer`), `suite` "
                             "or `tasks`; keep one of them (or make one evaluate step for each)")
        if self.data and self.scorer is None and self.judgment is None:
            raise ValueError("evaluate with `data` has no `scorer` — the scorer decides what a correct answer is; "
                             "add e.g. `scorer: exact_match` (`recipe list scorers`), or `judgment:`")
        return self


class Merge(_Step):
    """Merge a LoRA adapter into its base; the result is a plain HF model."""

    use: Literal["merge"]
    model: Ref

    OUTPUTS = {"model": A.model}
    REFS = {"model": A.model}


class Serve(_Step):
    """Serve a model over an OpenAI-compatible HTTP API for the following steps."""

    use: Literal["serve"]
    model: ModelSpec
    engine: Literal["auto", "transformers", "vllm"] = "auto"
    port: Optional[int] = Field(None, ge=1, le=65535, description="Default: a free port.")
    host: str = "127.0.0.1"

    OUTPUTS = {"endpoint": A.endpoint}
    REFS = {"model": A.model}


class Route(_Step):
    """Evaluate a trained router on held-out rows: its decision per question, accuracy and the share routed to each LLM."""

    use: Literal["route"]
    model: ModelSpec = Field(description="The trained router, e.g. `${steps.train.model}`.")
    data: Ref = Field(description="Held-out rows: {question, llm_id, label} (classifier) or {instruction, response} (generative).")
    router: Literal["classifier", "generative"] = Field(
        "classifier", description="`classifier`: P(correct) per (question, llm_id) pair; `generative`: a class word in the reply.")
    candidates: list[str] = Field(default_factory=list, description="llm_ids cheapest first (default: as they appear in the data).")
    threshold: float = Field(0.5, ge=0, le=1, description="Route to the cheapest candidate with P(correct) >= threshold.")
    question_field: str = "question"
    candidate_field: str = "llm_id"
    label_field: str = Field("label", description="The 0/1 label (classifier) or the reference reply holding the class word (generative).")
    text_fields: list[str] = Field(default_factory=list, description="Classifier input, as trained (default: [question_field, candidate_field]).")
    max_length: int = Field(512, ge=8)
    classes: dict[str, str] = Field(default_factory=dict, description="Generative: a word in the reply -> llm_id, e.g. `{easy: qwen2.5-7b, hard: gpt-4}`.")
    template: Optional[TemplateSpec] = Field(None, description="Generative: the prompt the router was trained with.")
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(16, ge=1)
    limit: Optional[int] = Field(None, ge=1)

    OUTPUTS = {"metrics": A.metrics, "rows": A.dataset}
    REFS = {"model": A.model, "data": A.dataset}

    @model_validator(mode="after")
    def _generative_needs(self) -> "Route":
        if self.router == "generative" and (not self.classes or self.template is None):
            raise ValueError("a generative router needs `classes:` (a word in its reply -> llm_id) and the `template:` it "
                             "was trained with; add e.g. `classes: {easy: qwen2.5-7b, hard: gpt-4}` and `template: alpaca/instruction`")
        return self


class DataBuild(_Step):
    """Materialize data outputs to files (per-source splits, mixes, info.json, test_index.json)."""

    use: Literal["data"]
    outputs_: Optional[list[str]] = Field(None, alias="outputs", description="Data names to build (default: all).")
    files: dict[str, str] = Field(default_factory=dict, description="Data name -> file path inside the step dir, e.g. `{test.gsm8k: test/gsm8k_test.jsonl}`.")
    info: Union[str, Literal[False]] = Field("info.json", description="Name of the mixing metadata files (`false`: none).")
    index: Union[str, Literal[False]] = Field("test_index.json", description="Name of the test split's index of its files (`false`: no split indexes).")

    def outputs(self) -> dict[str, ArtifactType]:
        return {"dir": A.value}


class Compare(_Step):
    """Compare two sets of metrics: deltas, CIs, improvements and regressions -> comparison.json."""

    use: Literal["compare"]
    baseline: str = Field(description="`${steps.NAME.metrics}`, `${stages.NAME.metrics}` or a run directory.")
    candidate: Ref
    fail_if: list[Gate] = Field(default_factory=list)

    OUTPUTS = {"comparison": A.metrics}
    REFS = {"candidate": A.metrics}


class Record(_Step):
    """Write an experiment record (README.md): date, base model, data, method, hyperparameters, results."""

    use: Literal["record"]
    title: str
    results: dict[str, Ref] = Field(default_factory=dict, description="Section name -> metrics reference.")
    notes: str = Field("", description="Text for the findings section.")

    OUTPUTS = {"record": A.value}


Step = Annotated[
    Union[TrainStep, Collect, Score, Label, Select, Evaluate, Merge, Serve, Route, DataBuild, Compare, Record],
    Field(discriminator="use"),
]
STEP_TYPES = ("train", "collect", "score", "label", "select", "evaluate", "merge", "serve", "route", "data", "compare", "record")
