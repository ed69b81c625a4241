"""Metric aggregation: accuracy, bootstrap 95% CIs clustered by unique item, AUROC, confusion matrices, pass@k,
and the paired comparison of two runs on their shared items. Definitions: docs/scorers.md ("Aggregation").

Everything is deterministic: bootstraps draw from numpy's PCG64 seeded by `seed`. scikit-learn is imported only
when an AUROC is computed.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

CONFIDENCE = 0.95
_BLOCK = 200  # bootstrap resamples drawn per block (bounds memory on large test sets)


# ---------------------------------------------------------------------------------------------------- pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), in the numerically stable product form."""
    if not 0 < k <= n:
        raise ValueError(f"pass@{k} needs 0 < k <= n (n = {n})")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n (c = {c}, n = {n})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> dict:
    """Mean pass@k over items given (n, c) per item; items with fewer than k samples are left out and counted."""
    values, skipped = [], 0
    for n, c in counts:
        if n >= k > 0:
            values.append(pass_at_k(n, c, k))
        else:
            skipped += 1
    return {"value": sum(values) / len(values) if values else None, "n_items": len(values), "skipped": skipped}


# ---------------------------------------------------------------------------------------------------- means and CIs


def mean(values: Iterable[float | bool | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    kept = [float(v) for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def bootstrap_ci(values: Sequence[float | bool | None], items: Sequence[Hashable] | None = None, *,
                 n_boot: int = 1000, seed: int = 0, confidence: float = CONFIDENCE) -> dict:
    """Mean with a percentile bootstrap CI, resampling unique items (clusters) with replacement.

    `items[i]` is the unique item id of `values[i]` (default: every value its own item). Rows of one item
    (oversampled duplicates, N samples of one prompt) stay together; each resample's statistic is the mean over
    all rows of the drawn items, so the point estimate is the plain row mean. None values are left out.
    """
    pairs = [(float(v), items[i] if items is not None else i) for i, v in enumerate(values) if v is not None]
    out: dict[str, Any] = {"mean": None, "low": None, "high": None, "n": len(pairs), "n_items": 0,
                           "n_boot": n_boot, "seed": seed, "confidence": confidence}
    if not pairs:
        out["reason"] = "no scored values"
        return out
    sums: dict[Hashable, float] = {}
    counts: Counter = Counter()
    for v, item in pairs:
        sums[item] = sums.get(item, 0.0) + v
        counts[item] += 1
    keys = list(sums)
    s = np.array([sums[key] for key in keys])
    c = np.array([counts[key] for key in keys], dtype=float)
    out["mean"] = float(s.sum() / c.sum())
    out["n_items"] = len(keys)
    if n_boot <= 0 or len(keys) == 1:
        out["low"] = out["high"] = out["mean"]
        return out
    stats = _cluster_bootstrap(s, c, n_boot, seed)
    out["low"], out["high"] = _percentiles(stats, confidence)
    return out


def _cluster_bootstrap(sums: np.ndarray, counts: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Ratio statistic sum/count over clusters drawn with replacement, `n_boot` times."""
    rng = np.random.Generator(np.random.PCG64(seed))
    k = len(sums)
    stats = np.empty(n_boot)
    for start in range(0, n_boot, _BLOCK):
        size = min(_BLOCK, n_boot - start)
        weights = rng.multinomial(k, np.full(k, 1.0 / k), size=size)
        stats[start:start + size] = (weights @ sums) / (weights @ counts)
    return stats


def _percentiles(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def summarize(values: Sequence[float | bool | None], items: Sequence[Hashable] | None = None, *,
              n_boot: int = 1000, seed: int = 0) -> dict:
    """{value, ci: [low, high], n, n_items, missing} for one metric over rows (clustered by item)."""
    ci = bootstrap_ci(values, items, n_boot=n_boot, seed=seed)
    out = {"value": ci["mean"], "ci": [ci["low"], ci["high"]] if n_boot > 0 and ci["mean"] is not None else None,
           "n": ci["n"], "n_items": ci["n_items"], "missing": sum(1 for v in values if v is None)}
    return out


# ---------------------------------------------------------------------------------------------------- AUROC, confusion


def auroc(labels: Sequence[bool | int | None], scores: Sequence[float | None], *, source: str | None = None) -> dict:
    """Area under the ROC curve of `scores` for the positive `labels` (scikit-learn's roc_auc_score).

    Pairs with a None label or score are left out (counted in `missing`). With only one class present the value
    is None and `reason` says which class."""
    pairs = [(bool(y), float(s)) for y, s in zip(labels, scores, strict=True) if y is not None and s is not None]
    out: dict[str, Any] = {"value": None, "n": len(pairs), "missing": len(labels) - len(pairs)}
    if source is not None:
        out["source"] = source
    positives = sum(1 for y, _ in pairs if y)
    out["positives"], out["negatives"] = positives, len(pairs) - positives
    if not pairs:
        out["reason"] = "no rows with both a label and a score"
    elif positives in (0, len(pairs)):
        which = "positive" if positives else "negative"
        out["reason"] = f"only one class present (all {len(pairs)} rows {which}): AUROC is undefined"
    else:
        from sklearn.metrics import roc_auc_score

        out["value"] = float(roc_auc_score([y for y, _ in pairs], [s for _, s in pairs]))
    return out


def confusion_matrix(truth: Sequence[str | None], predicted: Sequence[str | None], labels: Sequence[str]) -> dict:
    """Counts with rows = true label, columns = predicted label, in `labels` order.

    A prediction outside `labels` (an unparsed reply) is counted in `unparsed[true label]`; a row whose truth is
    outside `labels` is counted in `unknown_truth`."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    unparsed = {label: 0 for label in labels}
    unknown_truth = 0
    for t, p in zip(truth, predicted, strict=True):
        if t not in index:
            unknown_truth += 1
        elif p not in index:
            unparsed[t] += 1
        else:
            matrix[index[t]][index[p]] += 1
    return {"labels": list(labels), "matrix": matrix, "unparsed": unparsed, "unknown_truth": unknown_truth}


def distribution(values: Iterable[str | None], labels: Sequence[str]) -> dict[str, int]:
    """Counts per label in `labels` order; anything else under `other` (only when present)."""
    counts = Counter(values)
    out = {label: counts.pop(label, 0) for label in labels}
    other = sum(counts.values())
    if other:
        out["other"] = other
    return out


# ---------------------------------------------------------------------------------------------------- paired comparison


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts b (right -> wrong) and c (wrong -> right)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(b, c) + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


def paired_comparison(baseline: Mapping[Hashable, float | bool | None], candidate: Mapping[Hashable, float | bool | None],
                      *, n_boot: int = 1000, seed: int = 0, confidence: float = CONFIDENCE) -> dict:
    """Compare a metric of two runs on their shared items (item id -> the item's value in each run).

    delta = mean(candidate) - mean(baseline) over items present (not None) in both. The CI is a paired bootstrap
    over those items (seeded). Verdict: `improvement` when the CI's low end is > 0, `regression` when its high end
    is < 0, else `within noise`. For 0/1 values the discordant items are listed (`flipped`) and McNemar's exact
    p-value is given as well.
    """
    shared = [key for key in baseline if key in candidate and baseline[key] is not None and candidate[key] is not None]
    out: dict[str, Any] = {
        "n_shared": len(shared),
        "only_baseline": sum(1 for key in baseline if key not in candidate),
        "only_candidate": sum(1 for key in candidate if key not in baseline),
        "baseline": None, "candidate": None, "delta": None, "ci": None, "verdict": "within noise",
        "n_boot": n_boot, "seed": seed, "confidence": confidence,
    }
    if not shared:
        out["reason"] = "no shared items with values in both runs"
        return out
    a = np.array([float(baseline[key]) for key in shared])
    b = np.array([float(candidate[key]) for key in shared])
    d = b - a
    out["baseline"], out["candidate"], out["delta"] = float(a.mean()), float(b.mean()), float(d.mean())
    if n_boot > 0 and len(shared) > 1:
        stats = _cluster_bootstrap(d, np.ones_like(d), n_boot, seed)
        low, high = _percentiles(stats, confidence)
    else:
        low = high = float(d.mean())
    out["ci"] = [low, high]
    if low > 0:
        out["verdict"] = "improvement"
    elif high < 0:
        out["verdict"] = "regression"
    if all(v in (0.0, 1.0) for v in np.concatenate([a, b])):
        worse = [key for key, x, y in zip(shared, a, b) if x == 1.0 and y == 0.0]
        better = [key for key, x, y in zip(shared, a, b) if x == 0.0 and y == 1.0]
        out["flipped"] = {"right_to_wrong": worse, "wrong_to_right": better}
        out["mcnemar_p"] = mcnemar(len(worse), len(better))
    return out


def item_values(ids: Sequence[Hashable], values: Sequence[float | bool | None]) -> dict[Hashable, float | None]:
    """Collapse rows to one value per unique item: the mean of its non-None values (None when it has none)."""
    grouped: dict[Hashable, list[float]] = {}
    for item, value in zip(ids, values, strict=True):
        grouped.setdefault(item, [])
        if value is not None:
            grouped[item].append(float(value))
    return {item: (sum(vs) / len(vs) if vs else None) for item, vs in grouped.items()}


# ---------------------------------------------------------------------------------------------------- scorer results


def summarize_scores(rows: Sequence[Mapping], results: Sequence[Mapping[str, Mapping]], *, n_boot: int = 1000,
                     seed: int = 0, id_field: str = "id") -> dict[str, dict]:
    """Metrics per scorer from `score_rows` output: for each scorer, `accuracy` (row accuracy, i.e. mean share of
    correct samples), `score` and every named numeric value (row means), each with a bootstrap CI clustered by
    the row's unique item id; plus `rows` (scored), `failed_samples` and `unscored_rows`."""
    ids = [row.get(id_field, i) for i, row in enumerate(rows)]
    names: dict[str, None] = {}
    for result in results:
        for name in result:
            names.setdefault(name)
    out: dict[str, dict] = {}
    for name in names:
        per_row = [result.get(name) for result in results]
        present = [(item, r) for item, r in zip(ids, per_row) if r is not None]
        metric_names: dict[str, None] = {"accuracy": None, "score": None}
        for _, r in present:
            for key, value in r.items():
                if key not in ("correct", "n", "n_scored", "n_correct", "failed", "samples") and \
                        isinstance(value, (int, float)) and not isinstance(value, bool):
                    metric_names.setdefault(key)
        metrics: dict[str, Any] = {}
        for metric in metric_names:
            metrics[metric] = summarize([r.get(metric) for _, r in present], [item for item, _ in present],
                                        n_boot=n_boot, seed=seed)
        metrics["rows"] = sum(1 for _, r in present if r.get("n_scored"))
        metrics["unscored_rows"] = sum(1 for _, r in present if not r.get("n_scored"))
        metrics["failed_samples"] = sum(int(r.get("failed", 0)) for _, r in present)
        out[name] = metrics
    return out
