"""Step types: the executors of `use:` names register here."""

from engine.catalog import STEPS

for _name, _help in {
    "train": "train a model (method: sft, dpo, grpo, distill, classify, reward)",
    "collect": "generate n answers per row",
    "score": "score samples, routed by domain",
    "label": "label rows from scored samples (ability can/uncertain/cannot)",
    "select": "keep rows where an expression holds",
    "evaluate": "evaluate a model or endpoint on data or suites",
    "merge": "merge a LoRA adapter into its base",
    "serve": "serve a model over an OpenAI-compatible API",
    "route": "evaluate a trained router: decisions, accuracy, share routed per LLM",
    "data": "materialize data outputs to files",
    "compare": "compare two sets of metrics",
    "record": "write an experiment record",
}.items():
    STEPS.declare(_name, help=_help)

STEPS.register("train", "engine.plan.steps.train:run")
STEPS.register("merge", "engine.plan.steps.merge:run")
STEPS.register("serve", "engine.plan.steps.serve:run")
STEPS.register("select", "engine.plan.steps.select:run")
STEPS.register("score", "engine.plan.steps.score:run")
STEPS.register("label", "engine.plan.steps.label:run")
STEPS.register("collect", "engine.plan.steps.collect:run")
STEPS.register("route", "engine.plan.steps.route:run")
STEPS.register("data", "engine.plan.steps.data:run")
STEPS.register("evaluate", "engine.plan.steps.evaluate:run")
STEPS.register("compare", "engine.plan.steps.compare:run")
STEPS.register("record", "engine.plan.steps.record:run")
