"""judgment (seed 003, know-thyself): parse yes / no / uncertain, judgment accuracy, P(yes), AUROC, confusion matrix
and ability distribution; plus the ability rule that turns N scored answers into can / uncertain / cannot.

Definitions (docs/scorers.md, "Judgment"):
- parse: lowercase, ’ -> ', markdown and quotes dropped. (1) If the reply starts with a label word (yes; no;
  uncertain, unsure or "not sure") among the allowed labels, that label. (2) Else, if exactly one allowed label's
  words occur as whole words, that label. (3) Else unparsed (None): the sample is wrong, with a reason.
- a sample is correct when its parsed label equals the row's truth (`judgment_label` by default).
- row `judgment`: the most frequent parsed label of its samples (ties: the order of `labels`; None if none parsed).
- P(yes): given per row by the caller (from token log-probs of one forward pass: `p_yes_from_logprobs`), recorded
  as `p_source: logprobs`; otherwise the share of the row's samples parsed as yes, `p_source: samples`.
- AUROC: of P(yes) for rows whose truth is yes against all others; None with a reason when one class is missing.
- ability of a question from its N answers: accuracy >= `can` (default 1.0) -> can; >= `uncertain` (0.5) ->
  uncertain; else cannot. Judgment label: uncertainty mode can/uncertain/cannot -> yes/uncertain/no; binary mode
  through `binary_map` (default can -> yes, uncertain -> no, cannot -> no). Predicted ability: yes -> can,
  uncertain -> uncertain, no -> cannot.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Literal, Mapping, Sequence

from engine.evaluate.metrics import auroc, confusion_matrix, distribution, mean
from engine.score.scorer import failed_sample, row_result, sample_result

ABILITIES = ("can", "uncertain", "cannot")
SYNONYMS: dict[str, tuple[str, ...]] = {"yes": ("yes",), "no": ("no",), "uncertain": ("uncertain", "unsure", "not sure")}
PREDICTED_ABILITY = {"yes": "can", "uncertain": "uncertain", "no": "cannot"}
DEFAULT_BINARY_MAP = {"can": "yes", "uncertain": "no", "cannot": "no"}


def parse_judgment(reply: str | None, labels: Sequence[str] = ("yes", "no")) -> str | None:
    """The judgment label of a reply, or None (rules in the module docstring)."""
    if not reply:
        return None
    text = re.sub(r"[*_`\"“”#>]+", " ", reply.replace("’", "'").lower())
    text = " ".join(text.split())
    for label in labels:
        for word in SYNONYMS.get(label, (label,)):
            if re.match(rf"\W*{re.escape(word)}\b", text):
                return label
    found = [label for label in labels
             if any(re.search(rf"\b{re.escape(word)}\b", text) for word in SYNONYMS.get(label, (label,)))]
    return found[0] if len(found) == 1 else None


def ability(n_correct: int, n: int, can: float = 1.0, uncertain: float = 0.5) -> str:
    """can / uncertain / cannot from the share of correct answers."""
    if n <= 0:
        raise ValueError("ability needs at least one scored answer")
    share = n_correct / n
    return "can" if share >= can else "uncertain" if share >= uncertain else "cannot"


def judgment_label(ability_: str, mode: Literal["binary", "uncertainty"] = "binary",
                   binary_map: Mapping[str, str] | None = None) -> str:
    """The judgment a model should give for a question of this ability."""
    if mode == "uncertainty":
        return {"can": "yes", "uncertain": "uncertain", "cannot": "no"}[ability_]
    return dict(binary_map or DEFAULT_BINARY_MAP)[ability_]


def p_yes_from_logprobs(logprobs: Mapping[str, float], labels: Sequence[str] = ("yes", "no")) -> float | None:
    """P(yes) normalised over the labels, from token log-probs (variants such as " Yes" / "yes" are pooled)."""
    pooled: dict[str, list[float]] = {label: [] for label in labels}
    for token, lp in logprobs.items():
        key = token.strip().lower()
        if key in pooled and lp is not None and math.isfinite(lp):
            pooled[key].append(float(lp))
    totals = {label: math.fsum(math.exp(lp) for lp in lps) for label, lps in pooled.items()}
    z = sum(totals.values())
    return totals.get("yes", 0.0) / z if z > 0 else None


class Judgment:
    """Judgment accuracy per row, with the row's `judgment`, `p_yes` and `p_source` (see the module docstring)."""

    name = "judgment"

    def __init__(self, labels: Sequence[str] = ("yes", "no"), truth_field: str = "judgment_label"):
        if "yes" not in labels:
            raise TypeError("judgment labels must include 'yes'")
        self.labels, self.truth_field = tuple(labels), truth_field

    def score(self, rows: list[dict], predictions: list[list[str | None]], *,
              p_yes: Sequence[float | None] | None = None) -> list[dict]:
        out = []
        for i, (row, replies) in enumerate(zip(rows, predictions, strict=True)):
            truth = row.get(self.truth_field)
            parsed = [parse_judgment(r, self.labels) for r in replies]
            samples = []
            for reply, label in zip(replies, parsed):
                if truth is None:
                    samples.append(failed_sample(f"row has no {self.truth_field}"))
                elif reply is None:
                    samples.append(failed_sample("no prediction (generation failed)"))
                elif label is None:
                    samples.append(sample_result(0.0, judgment=None, reason=f"no {'/'.join(self.labels)} in the reply"))
                else:
                    samples.append(sample_result(1.0 if label == str(truth).lower() else 0.0, judgment=label))
            result = row_result(samples)
            counts = Counter(label for label in parsed if label is not None)
            result["judgment"] = max(self.labels, key=lambda lab: (counts[lab], -self.labels.index(lab))) \
                if counts else None
            given = p_yes[i] if p_yes is not None else row.get("p_yes")
            if given is not None:
                result["p_yes"], result["p_source"] = float(given), "logprobs"
            else:
                result["p_yes"] = counts["yes"] / len(replies) if replies else None
                result["p_source"] = "samples"
            result["truth"] = None if truth is None else str(truth).lower()
            out.append(result)
        return out


def judgment_metrics(rows: Sequence[Mapping], results: Sequence[Mapping], labels: Sequence[str] = ("yes", "no"),
                     ability_field: str = "ability") -> dict:
    """Judgment accuracy, AUROC of P(yes), confusion matrix (truth x judgment), ability and judgment distributions."""
    truths = [r.get("truth") for r in results]
    judgments = [r.get("judgment") for r in results]
    sources = {r.get("p_source") for r in results if r.get("p_yes") is not None}
    source = sources.pop() if len(sources) == 1 else ("mixed" if sources else None)
    return {
        "accuracy": mean(r.get("accuracy") for r in results),
        "auroc": auroc([None if t is None else t == "yes" for t in truths], [r.get("p_yes") for r in results],
                       source=source),
        "confusion": confusion_matrix(truths, judgments, labels),
        "ability_distribution": {
            "actual": distribution((row.get(ability_field) for row in rows), ABILITIES),
            "predicted": distribution((PREDICTED_ABILITY.get(j) if j else None for j in judgments), ABILITIES),
        },
        "judgment_distribution": distribution(judgments, list(labels)),
        "unparsed": sum(1 for j in judgments if j is None),
        "rows": len(results),
    }
