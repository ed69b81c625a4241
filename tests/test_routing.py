"""Routing decisions and metrics (engine/evaluate/routing.py), by hand-computed examples."""

from __future__ import annotations

import pytest

from engine.evaluate.routing import binary_scores, candidates_of, choose, class_of, route_metrics

CHEAP_FIRST = ["small", "big"]


def test_cheapest_trusted_candidate_wins_else_the_most_likely():
    assert choose({"small": 0.6, "big": 0.9}, CHEAP_FIRST, 0.5) == "small"
    assert choose({"small": 0.4, "big": 0.9}, CHEAP_FIRST, 0.5) == "big"
    assert choose({"small": 0.6, "big": 0.9}, CHEAP_FIRST, 0.7) == "big"
    assert choose({"small": 0.3, "big": 0.2}, CHEAP_FIRST, 0.5) == "small"   # trusts none: the most likely
    assert choose({"small": 0.3, "big": 0.3}, CHEAP_FIRST, 0.5) == "small"   # a tie goes to the cheaper


def test_candidates_default_to_first_appearance():
    rows = [{"llm_id": "b"}, {"llm_id": "a"}, {"llm_id": "b"}, {"x": 1}]
    assert candidates_of(rows, "llm_id") == ["b", "a"]
    assert candidates_of(rows, "llm_id", ["a", "b"]) == ["a", "b"]


def test_class_word_is_the_first_whole_word_in_any_case():
    classes = {"easy": "small", "hard": "big"}
    assert class_of("This question is HARD, not easy.", classes) == "hard"
    assert class_of("easy: yes", classes) == "easy"
    assert class_of("uneasy hardware", classes) is None
    assert class_of(None, classes) is None


def test_binary_scores():
    assert binary_scores([1, 1, 0, 0], [1, 0, 1, 0]) == {"accuracy": 0.5, "f1": 0.5}
    assert binary_scores([0, 0], [0, 0]) == {"accuracy": 1.0, "f1": 0.0}


def test_route_metrics_share_correct_oracle_and_baselines():
    labels = {("q1", "small"): 1, ("q1", "big"): 1, ("q2", "small"): 0, ("q2", "big"): 1,
              ("q3", "small"): 0, ("q3", "big"): 0, ("q4", "small"): 1}
    decisions = {"q1": "small", "q2": "small", "q3": "big", "q4": "big"}
    m = route_metrics(["q1", "q2", "q3", "q4"], decisions, labels, CHEAP_FIRST)
    assert m["routed_share"] == {"small": 0.5, "big": 0.5}
    assert m["routed_labelled"] == 3 and m["routed_correct"] == pytest.approx(1 / 3)   # q4's big pair has no label
    assert m["oracle"] == pytest.approx(2 / 3)                     # over q1..q3, the questions with every label
    assert m["always"] == {"small": pytest.approx(1 / 3), "big": pytest.approx(2 / 3)}
