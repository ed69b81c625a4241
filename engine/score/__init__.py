"""Scorers, one module per family; they register here (lazily: nothing below imports an implementation).

The interface, routing and batch scoring live in engine/score/scorer.py; GRPO rewards in engine/score/reward.py;
the definitions every scorer implements are written down in docs/scorers.md.
"""

from engine.catalog import SCORERS

for _name, _target, _help in (
    ("exact_match", "text_match:ExactMatch", "normalised final answer equals a reference answer"),
    ("numeric_match", "text_match:NumericMatch", "numeric equality of the final number"),
    ("partial_match", "text_match:PartialMatch", "a reference answer occurs in the reply"),
    ("gsm8k", "text_match:GSM8K", "GSM8K final number (after ####) equality"),
    ("math_verify", "math_equiv:MathVerify", "mathematical equivalence via math-verify"),
    ("squad_v2", "qa:SquadV2", "SQuAD 2.0 EM/F1 with no-answer (official normalisation)"),
    ("hotpotqa", "qa:HotpotQA", "HotpotQA answer EM/F1 (official)"),
    ("triviaqa_alias", "qa:TriviaQAAlias", "TriviaQA alias match (official normalisation)"),
    ("code_exec", "code_exec:CodeExec", "pass@k by sandboxed execution of tests (HumanEval, MBPP)"),
    ("llm_judge", "judge:LLMJudge", "LLM judge with a rubric (needs a generator)"),
    ("tutoring", "tutoring:Tutoring", "Socratic step rate and answer reveal"),
    ("safety", "safety:Safety", "refusal rate on harmful prompts, inappropriate engagement"),
    ("judgment", "judgment:Judgment", "judgment accuracy, P(yes), AUROC, confusion matrix"),
):
    SCORERS.register(_name, f"engine.score.{_target}", help=_help)

_LAZY = {
    "reward_function": "engine.score.reward",
    "judge_reward_function": "engine.score.reward",
    "score_rows": "engine.score.scorer",
    "route": "engine.score.scorer",
    "make_scorer": "engine.score.scorer",
    "Scorer": "engine.score.scorer",
}


def __getattr__(name: str):
    """`engine.score.reward_function` and friends, imported on first use (PEP 562)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine.score' has no attribute '{name}'")
