"""The common record every dataset adapter produces, so templates, scorers and steps speak one schema.

Adapters fill what their dataset has and leave the rest out (None / empty); extra fields a dataset
carries (llm_id, grade, topic_tags, chosen, rejected, answerable, ...) are kept as they are.
"""

from __future__ import annotations

COMMON_FIELDS: dict[str, str] = {
    "id": "stable unique id: the dataset's own id, else a hash of the content (str)",
    "source": "the recipe's name for the source, e.g. `gsm8k` (str)",
    "dataset": "the adapter that produced the row, e.g. `gsm8k` (str)",
    "domain": "math | qa | code | tutoring | router | ... (str)",
    "question": "the question, problem or instruction text (str)",
    "context": "supporting text, paragraphs joined (str or None)",
    "answers": "reference answers / aliases; the first is canonical (list[str])",
    "solution": "reference solution: worked solution or canonical code (str or None)",
    "prompt": "the model-facing prompt when the dataset gives one (code prompt, tutoring prompt) (str or None)",
    "response": "the target response for SFT (alpaca, tutoring) (str or None)",
    "tests": "code tests: a test program or list of assert lines (str | list[str] | None)",
    "entry_point": "function name the tests call (str or None)",
    "label": "class label (int | str | None)",
    "meta": "where the row came from: {path, name, split, revision, index} (dict)",
}
