"""Routing decisions and their metrics, from a router's scores (pure: no model, no I/O).

A router picks, for each question, the LLM (`llm_id`) that should answer it. `candidates` are ordered
cheapest first, as CoBench's cascade is: a classifier router sends a question to the first candidate it
predicts answers correctly (P(correct) >= threshold), and to the most likely one when it trusts none. A
generative router (an LLM that writes a difficulty assessment) routes through the class word in its reply
(`classes: {easy: small-llm, hard: big-llm}`).

Metrics (`route_metrics`):
- `accuracy`, `f1`: the router as a classifier of the labelled (question, llm_id) rows (or of the reference
  class, for a generative router).
- `routed_share.<llm_id>`: the share of questions routed to each candidate (`none` where a generative reply
  names no class).
- `routed_correct`: among questions whose chosen (question, llm_id) pair is labelled, the share the chosen LLM
  answers correctly; `oracle`: the share some candidate answers correctly (the best any router can do), and
  `always.<llm_id>`: the share one fixed candidate answers correctly (the baselines a router must beat).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Iterable, Optional


def candidates_of(rows: Iterable[dict], field: str, given: Optional[list[str]] = None) -> list[str]:
    """The given order, else the llm_ids in order of first appearance."""
    if given:
        return list(given)
    seen: dict[str, None] = {}
    for row in rows:
        if row.get(field) is not None:
            seen.setdefault(str(row[field]), None)
    return list(seen)


def choose(p_correct: dict[str, float], candidates: list[str], threshold: float) -> str:
    """The cheapest candidate with P(correct) >= threshold, else the most likely to be correct."""
    for llm in candidates:
        if p_correct[llm] >= threshold:
            return llm
    return max(candidates, key=lambda llm: (p_correct[llm], -candidates.index(llm)))


def class_of(text: Optional[str], classes: dict[str, str]) -> Optional[str]:
    """The class word that occurs first in `text` (whole word, any case), or None."""
    if not text:
        return None
    found = [(m.start(), word) for word in classes
             for m in [re.search(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE)] if m]
    return min(found)[1] if found else None


def binary_scores(predicted: list[int], labels: list[int]) -> dict[str, float]:
    pairs = list(zip(predicted, labels))
    tp = sum(1 for p, y in pairs if p == 1 and y == 1)
    fp = sum(1 for p, y in pairs if p == 1 and y == 0)
    fn = sum(1 for p, y in pairs if p == 0 and y == 1)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {"accuracy": sum(1 for p, y in pairs if p == y) / len(pairs) if pairs else 0.0, "f1": f1}


def route_metrics(questions: list[str], decisions: dict[str, str], labels: dict[tuple[str, str], int],
                  candidates: list[str]) -> dict:
    """Share routed per candidate, routed_correct, oracle and always.<llm> over the questions."""
    share = Counter(decisions[q] for q in questions)
    known = [q for q in questions if (q, decisions[q]) in labels]
    by_question: dict[str, dict[str, int]] = defaultdict(dict)
    for (q, llm), y in labels.items():
        by_question[q][llm] = y
    complete = [q for q in questions if all(llm in by_question[q] for llm in candidates)]
    values = {
        "questions": len(questions),
        "routed_share": {llm: share.get(llm, 0) / len(questions) if questions else 0.0
                         for llm in [*candidates, *sorted(set(share) - set(candidates))]},
        "routed_correct": sum(labels[(q, decisions[q])] for q in known) / len(known) if known else None,
        "routed_labelled": len(known),
    }
    if complete:  # baselines need every candidate's label for the same questions
        values["oracle"] = sum(1 for q in complete if any(by_question[q].values())) / len(complete)
        values["always"] = {llm: sum(by_question[q][llm] for q in complete) / len(complete) for llm in candidates}
    return values
