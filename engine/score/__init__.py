"""Scorers, one module per family; they register here."""

from engine.catalog import SCORERS

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
