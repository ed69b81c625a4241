"""Reading-comprehension and trivia scorers with the official normalisations: squad_v2, hotpotqa, triviaqa_alias.

Definitions (docs/scorers.md, "Question answering"):
- squad_v2: the official SQuAD 2.0 script (`normalize_answer`: lowercase, drop punctuation, drop articles a/an/the,
  collapse whitespace; EM; token F1; max over gold answers). No-answer: gold is no-answer when `answers` is empty,
  the row says `answerable: false`, or every gold answer normalises to "" or "unanswerable"; a prediction is
  no-answer when it normalises to "", "unanswerable" or "no answer". Then EM = F1 = 1 when both are no-answer,
  else 0.
- hotpotqa: the official HotpotQA answer metrics (same normalisation; F1 is 0 when either side is yes / no /
  noanswer and they differ), max over gold answers.
- triviaqa_alias: aliases are `answers` plus `normalized_aliases` when the row has them; the official TriviaQA
  normalisation (lowercase, `_` -> space, punctuation incl. ‘’´` -> space,
  drop articles, collapse whitespace); `em` = the prediction equals an alias; `contains` = an alias occurs in the
  prediction as a whole-token span; `f1` = max token F1. The verdict (`correct`) is `contains` by default
  (`match: exact` makes it `em`).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Literal, Mapping

from engine.score.scorer import failed_sample, per_sample, references, sample_result

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)
_TRIVIA_PUNCT = set(string.punctuation + "‘’´`")
NO_ANSWER_GOLD = {"", "unanswerable"}
NO_ANSWER_PRED = {"", "unanswerable", "no answer"}


def normalize_answer(text: str) -> str:
    """SQuAD / HotpotQA official normalisation."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalize_trivia(text: str) -> str:
    """TriviaQA official normalisation."""
    text = text.replace("_", " ").lower()
    text = "".join(" " if ch in _TRIVIA_PUNCT else ch for ch in text)
    return " ".join(_ARTICLES.sub(" ", text).split()).strip()


def token_f1(gold_tokens: list[str], pred_tokens: list[str]) -> tuple[float, float, float]:
    """(f1, precision, recall) of two token lists (0s when nothing is shared)."""
    common = Counter(gold_tokens) & Counter(pred_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0, 0.0, 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall), precision, recall


# ---------------------------------------------------------------------------------------------------- SQuAD 2.0


def squad_exact(gold: str, pred: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(pred))


def squad_f1(gold: str, pred: str) -> float:
    gold_tokens, pred_tokens = normalize_answer(gold).split(), normalize_answer(pred).split()
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    return token_f1(gold_tokens, pred_tokens)[0]


def squad_gold(row: Mapping) -> list[str]:
    """Gold answers, [""] for a no-answer question."""
    if row.get("answerable") is False:
        return [""]
    golds = [a for a in references(row) if normalize_answer(a) not in NO_ANSWER_GOLD]
    return golds or [""]


class SquadV2:
    """SQuAD 2.0 EM / F1 with no-answer (see the module docstring). score = F1, correct = EM."""

    name = "squad_v2"

    def score(self, rows: list[dict], predictions: list[list[str | None]]) -> list[dict]:
        return per_sample(rows, predictions, self._one)

    def _one(self, row: Mapping, prediction: str) -> dict:
        golds = squad_gold(row)
        pred = "" if normalize_answer(prediction) in NO_ANSWER_PRED else prediction
        em = max(squad_exact(g, pred) for g in golds)
        f1 = max(squad_f1(g, pred) for g in golds)
        return sample_result(f1, correct=em == 1.0, em=em, f1=f1, has_answer=golds != [""])


# ---------------------------------------------------------------------------------------------------- HotpotQA


def hotpot_f1(gold: str, pred: str) -> tuple[float, float, float]:
    g, p = normalize_answer(gold), normalize_answer(pred)
    special = ("yes", "no", "noanswer")
    if (p in special or g in special) and p != g:
        return 0.0, 0.0, 0.0
    return token_f1(g.split(), p.split())


class HotpotQA:
    """HotpotQA answer EM / F1 (official), max over gold answers. score = F1, correct = EM."""

    name = "hotpotqa"

    def score(self, rows: list[dict], predictions: list[list[str | None]]) -> list[dict]:
        return per_sample(rows, predictions, self._one)

    def _one(self, row: Mapping, prediction: str) -> dict:
        golds = references(row)
        if not golds:
            return failed_sample("row has no reference answers")
        em = max(float(normalize_answer(g) == normalize_answer(prediction)) for g in golds)
        best = max((hotpot_f1(g, prediction) for g in golds), key=lambda t: t[0])
        return sample_result(best[0], correct=em == 1.0, em=em, f1=best[0], precision=best[1], recall=best[2])


# ---------------------------------------------------------------------------------------------------- TriviaQA


class TriviaQAAlias:
    """TriviaQA alias match (official normalisation): em, contains, f1; `match` picks the verdict."""

    name = "triviaqa_alias"

    def __init__(self, match: Literal["contains", "exact"] = "contains"):
        if match not in ("contains", "exact"):
            raise TypeError(f"match must be 'contains' or 'exact', not {match!r}")
        self.match = match

    def score(self, rows: list[dict], predictions: list[list[str | None]]) -> list[dict]:
        return per_sample(rows, predictions, self._one)

    def _one(self, row: Mapping, prediction: str) -> dict:
        extra = row.get("normalized_aliases") or []
        aliases = list(dict.fromkeys(a for a in (normalize_trivia(str(x)) for x in [*references(row), *extra]) if a))
        if not aliases:
            return failed_sample("row has no answer aliases")
        pred = normalize_trivia(prediction)
        padded = f" {pred} "
        em = float(pred in aliases)
        contains = float(any(f" {a} " in padded for a in aliases))
        pred_tokens = pred.split()
        f1 = max((token_f1(a.split(), pred_tokens)[0] if pred_tokens else 0.0) for a in aliases)
        verdict = contains if self.match == "contains" else em
        return sample_result(verdict, correct=verdict == 1.0, em=em, contains=contains, f1=f1)
