"""The scorer interface, result records, routing rows to scorers by `source`/`domain`, and batch scoring.

A scorer takes rows (the common record, engine/data/record.py) and, per row, a list of sampled predictions, and
returns one result per row:

    {"score": 0.5, "correct": False, "accuracy": 0.5, "n": 2, "n_scored": 2, "n_correct": 1, "failed": 0,
     "em": 0.5, "f1": 0.75,                       # means of the samples' named numeric values
     "samples": [{"score": 1.0, "correct": True, "em": 1.0, "f1": 1.0}, {"score": 0.0, "correct": False, ...}]}

Definitions (docs/scorers.md): a sample's `score` is in [0, 1] or None when it could not be scored (then it has a
`reason` and counts in `failed`); `correct` is the scorer's verdict. The row's `score` is the mean of its scored
samples, `accuracy` = n_correct / n_scored, `correct` is True when every scored sample is correct (for one sample:
that sample's verdict; for N samples: the seed-003 ability "can"), and `pass@k` (when asked) is the unbiased
estimator over n_scored samples with n_correct correct.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, Union

from engine.catalog import SCORERS
from engine.evaluate.metrics import pass_at_k
from engine.recipe.errors import EngineError, choose_from

ScorerChoice = Union[str, Sequence[str], Mapping[str, Union[str, Sequence[str]]]]
Predictions = Sequence[Union[Sequence[Union[str, None]], str, None]]


class Scorer(Protocol):
    """What every scorer implements: batched scoring of rows, each with one or more sampled predictions."""

    name: str

    def score(self, rows: list[dict], predictions: list[list[str | None]]) -> list[dict]:
        """One result per row (see `row_result`)."""
        ...


# ---------------------------------------------------------------------------------------------------- results


def sample_result(score: float | None, correct: bool | None = None, *, reason: str | None = None,
                  **values: Any) -> dict:
    """One sample's result. `correct` defaults to `score >= 1`; a None score means it could not be scored."""
    if score is not None:
        score = float(score)
        if correct is None:
            correct = score >= 1.0
    else:
        correct = None
    out: dict[str, Any] = {"score": score, "correct": None if correct is None else bool(correct)}
    out.update(values)
    if reason is not None:
        out["reason"] = reason
    return out


def failed_sample(reason: str, **values: Any) -> dict:
    """A sample that could not be scored (no prediction, no reference, judge without a score...)."""
    return sample_result(None, reason=reason, **values)


def row_result(samples: list[dict], k: Iterable[int] = ()) -> dict:
    """Summarise a row's sample results: counts, mean score, accuracy, means of named numeric values, pass@k."""
    scored = [s for s in samples if s.get("score") is not None]
    n_scored, n_correct = len(scored), sum(1 for s in scored if s.get("correct"))
    out: dict[str, Any] = {
        "score": sum(s["score"] for s in scored) / n_scored if n_scored else None,
        "correct": (n_correct == n_scored) if n_scored else None,
        "accuracy": n_correct / n_scored if n_scored else None,
        "n": len(samples), "n_scored": n_scored, "n_correct": n_correct, "failed": len(samples) - n_scored,
    }
    names: dict[str, None] = {}
    for s in scored:
        for key, value in s.items():
            if key not in ("score", "correct") and _is_number(value):
                names.setdefault(key)
    for key in names:
        values = [float(s[key]) for s in scored if _is_number(s.get(key))]
        out[key] = sum(values) / len(values) if values else None
    add_pass_at_k(out, k)
    out["samples"] = samples
    return out


def add_pass_at_k(result: dict, k: Iterable[int]) -> dict:
    """Set `pass@K` on a row result for each K <= n_scored (unbiased estimator); larger K are left out."""
    for kk in k:
        if 0 < kk <= result["n_scored"]:
            result[f"pass@{kk}"] = pass_at_k(result["n_scored"], result["n_correct"], kk)
    return result


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and value is not None


def per_sample(rows: Sequence[Mapping], predictions: Sequence[Sequence[str | None]],
               fn: Callable[[Mapping, str], dict], k: Iterable[int] = ()) -> list[dict]:
    """Row results for a scorer that scores each (row, prediction) on its own; a None prediction fails."""
    k = tuple(k)
    out = []
    for row, preds in zip(rows, predictions, strict=True):
        samples = [failed_sample("no prediction (generation failed)") if p is None else fn(row, p) for p in preds]
        out.append(row_result(samples, k))
    return out


def references(row: Mapping) -> list[str]:
    """The row's reference answers as strings (`answers`, a list or one value); empty when it has none."""
    answers = row.get("answers")
    if answers is None:
        return []
    if isinstance(answers, (str, int, float)):
        return [str(answers)]
    return [str(a) for a in answers if a is not None]


# ---------------------------------------------------------------------------------------------------- routing


def route(rows: Sequence[Mapping], choice: ScorerChoice) -> list[list[str]]:
    """The scorer names for each row. `choice` is a name, a list of names (every row), or a mapping from a row's
    `source` or `domain` to names, with `default` for the rest; `source` is looked up before `domain`.
    A row that matches nothing (and no `default`) gets no scorer."""
    if isinstance(choice, str):
        return [[choice] for _ in rows]
    if not isinstance(choice, Mapping):
        names = [str(c) for c in choice]
        return [list(names) for _ in rows]
    table = {str(key): [value] if isinstance(value, str) else [str(v) for v in value] for key, value in choice.items()}
    out = []
    for row in rows:
        names: list[str] = []
        for key in (row.get("source"), row.get("domain")):
            if key is not None and str(key) in table:
                names = table[str(key)]
                break
        else:
            names = table.get("default", [])
        out.append(list(names))
    return out


def choice_names(choice: ScorerChoice) -> list[str]:
    """Every scorer name a choice mentions, in order, without repeats."""
    if isinstance(choice, str):
        return [choice]
    values: Iterable = choice.values() if isinstance(choice, Mapping) else [choice]
    names: dict[str, None] = {}
    for value in values:
        for name in [value] if isinstance(value, str) else value:
            names.setdefault(str(name))
    return list(names)


def make_scorer(name: str, **options: Any) -> Scorer:
    """The registered scorer `name`, built with `options` (a recipe's `args: {NAME: {...}}`)."""
    factory = SCORERS.get(name)
    try:
        return factory(**options)
    except TypeError as err:
        try:
            params = [p for p in inspect.signature(factory).parameters if p != "self"]
        except (TypeError, ValueError):
            params = []
        accepted = ", ".join(params) if params else "none"
        raise EngineError(f"scorer '{name}': bad options {sorted(options)}: {err} (options it accepts: {accepted})") from None


def build_scorers(choice: ScorerChoice, options: Mapping[str, Mapping[str, Any]] | None = None,
                  scorers: Mapping[str, Scorer] | None = None) -> dict[str, Scorer]:
    """One scorer per name the choice mentions: prebuilt ones from `scorers` (e.g. an LLM judge with its generator),
    the rest made from the registry with `options[name]`."""
    options = dict(options or {})
    names = choice_names(choice)
    unknown = [key for key in options if key not in names]
    if unknown:
        raise EngineError(f"scorer options for {', '.join(repr(u) for u in unknown)}, which the scorer choice does not "
                          f"use; {choose_from(unknown[0], names)}")
    built: dict[str, Scorer] = {}
    for name in names:
        if scorers and name in scorers:
            built[name] = scorers[name]
        else:
            built[name] = make_scorer(name, **dict(options.get(name) or {}))
    return built


def normalise_predictions(predictions: Predictions) -> list[list[str | None]]:
    """Accept one prediction per row (a string or None) or a list of samples per row."""
    return [[p] if p is None or isinstance(p, str) else list(p) for p in predictions]


def score_rows(rows: Sequence[Mapping], predictions: Predictions, choice: ScorerChoice, *,
               options: Mapping[str, Mapping[str, Any]] | None = None, scorers: Mapping[str, Scorer] | None = None,
               k: Iterable[int] = ()) -> list[dict[str, dict]]:
    """Score every row with the scorers routed to it, each scorer called once on its rows (batched).

    Returns, per row, {scorer name: row result}; a row routed to no scorer gets {}. `k` adds pass@k to every
    result (code_exec adds its own `k`)."""
    rows = [dict(r) for r in rows]
    preds = normalise_predictions(predictions)
    if len(rows) != len(preds):
        raise EngineError(f"score_rows: {len(rows)} rows but {len(preds)} predictions")
    built = build_scorers(choice, options, scorers)
    routed = route(rows, choice)
    by_name: dict[str, list[int]] = {}
    for i, names in enumerate(routed):
        for name in names:
            by_name.setdefault(name, []).append(i)
    out: list[dict[str, dict]] = [{} for _ in rows]
    k = tuple(k)
    for name, indices in by_name.items():
        results = built[name].score([rows[i] for i in indices], [preds[i] for i in indices])
        if len(results) != len(indices):
            raise EngineError(f"scorer '{name}' returned {len(results)} results for {len(indices)} rows")
        for i, result in zip(indices, results):
            out[i][name] = add_pass_at_k(result, k) if k else result
    return out
