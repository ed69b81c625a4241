"""Deterministic splits: exact ratios, seeds, stability under reordering, group_by, leakage."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from engine.data.build import materialize
from engine.data.sources import DataError
from engine.data.split import split_positions, split_targets
from engine.recipe.loader import load_recipe
from engine.recipe.validate import validate

FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RECIPE_ENGINE_CACHE", str(tmp_path_factory.getbasetemp() / "engine-cache"))


def make(tmp_path: Path, sources: dict, **data) -> object:
    first = next(iter(sources))
    doc = {"recipe": 1, "kind": "eval", "name": "t", "model": {"source": "hub", "path": "org/model"},
           "data": {"sources": sources, **data},
           "evaluate": {"use": "evaluate", "data": "${data.%s}" % first, "scorer": "exact_match"}}
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(doc, indent=1))
    return validate(load_recipe(path))


def test_split_targets_match_the_seed_volumes():
    assert split_targets(164, {"train": 5, "test": 1}) == {"train": 137, "test": 27}      # HumanEval
    assert split_targets(7473, {"train": 5, "test": 1}) == {"train": 6228, "test": 1245}   # GSM8K train
    assert split_targets(427, {"train": 5, "test": 1}) == {"train": 356, "test": 71}       # MBPP sanitized
    assert split_targets(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert sum(split_targets(86821, {"train": 8, "val": 1, "test": 1}).values()) == 86821


def test_split_is_deterministic_and_seeded():
    values = [f"id{i}" for i in range(1000)]
    a = split_positions(values, {"train": 5, "test": 1}, 42)
    assert a == split_positions(values, {"train": 5, "test": 1}, 42)
    assert len(a["train"]) == 833 and len(a["test"]) == 167
    assert sorted(a["train"] + a["test"]) == list(range(1000))
    b = split_positions(values, {"train": 5, "test": 1}, 43)
    assert set(a["test"]) != set(b["test"])


def test_split_is_stable_under_input_reordering():
    values = [f"id{i}" for i in range(500)]
    a = split_positions(values, {"train": 5, "test": 1}, 7)
    shuffled = values[:]
    random.Random(1).shuffle(shuffled)
    b = split_positions(shuffled, {"train": 5, "test": 1}, 7)
    for split in a:
        assert {values[i] for i in a[split]} == {shuffled[i] for i in b[split]}


def test_group_by_keeps_groups_together():
    contexts = [f"c{i // 4}" for i in range(400)]   # 100 paragraphs, 4 questions each
    parts = split_positions(contexts, {"train": 5, "test": 1}, 0)
    train_groups = {contexts[i] for i in parts["train"]}
    test_groups = {contexts[i] for i in parts["test"]}
    assert not train_groups & test_groups
    assert abs(len(parts["test"]) - 400 / 6) <= 4     # within one group of the ratio


def test_split_in_a_build_by_group_by_and_no_overlap(tmp_path):
    squad = {"source": "jsonl", "path": str(FIXTURES / "squad_v2.jsonl"), "adapter": "squad_v2"}
    gsm = {"source": "jsonl", "path": str(FIXTURES / "gsm8k.jsonl"), "adapter": "gsm8k"}
    v = make(tmp_path, {"squad": squad, "gsm8k": gsm}, split={"ratios": {"train": 2, "test": 1}, "group_by": "context"})
    m = materialize(v)
    d = m.datasets
    for source, total in (("squad", 8), ("gsm8k", 36)):
        train, test = list(d[f"train.{source}"]), list(d[f"test.{source}"])
        assert len(train) + len(test) == total
        assert not {r["id"] for r in train} & {r["id"] for r in test}
    squad_train_contexts = {r["context"] for r in d["train.squad"]}
    assert not squad_train_contexts & {r["context"] for r in d["test.squad"]}
    assert len(d["train"]) == len(d["train.squad"]) + len(d["train.gsm8k"])
    assert m.info["split"]["counts"]["gsm8k"] == {"train": 24, "test": 12}


def test_group_by_field_missing_or_empty(tmp_path):
    gsm = {"source": "jsonl", "path": str(FIXTURES / "gsm8k.jsonl"), "adapter": "gsm8k"}
    with pytest.raises(DataError, match=r"split: source 'gsm8k' has no field 'contxt' to group by \(fields: id, .*"):
        materialize(make(tmp_path, {"gsm8k": gsm}, split={"group_by": "contxt"}))
    # rows without a value (GSM8K has no context) are groups of their own, by id: the same split as group_by id
    by_context = materialize(make(tmp_path, {"gsm8k": gsm}, split={"group_by": "context"})).datasets
    by_id = materialize(make(tmp_path, {"gsm8k": gsm}, split={"group_by": "id"})).datasets
    assert len(by_context["test"]) == 6 and len(by_id["test"]) == 6


def test_leakage_across_splits_is_an_error(tmp_path):
    # the same question under two ids (a copy with another id): group_by id would put them in different splits
    rows = [{"id": f"a{i}", "question": f"What is {i} squared?", "answers": [str(i * i)]} for i in range(30)]
    rows += [{"id": f"b{i}", "question": f"What is {i} squared?", "answers": [str(i * i)]} for i in range(30)]
    src = {"source": "inline", "rows": rows}
    with pytest.raises(DataError) as err:
        materialize(make(tmp_path, {"s": src}, split={"seed": 1}))
    text = str(err.value)
    assert "train/test leakage" in text and "share an input across splits" in text and "has the same input as" in text
    assert "dedupe: [question, context]" in text
    # grouping the duplicates together, or removing them, fixes it
    materialize(make(tmp_path, {"s": src}, split={"seed": 1, "group_by": "question"}))
    deduped = {**src, "transforms": [{"dedupe": "question"}]}
    materialize(make(tmp_path, {"s": deduped}, split={"seed": 1}))


def test_leakage_check_covers_rows_of_different_sources(tmp_path):
    a = {"source": "inline", "rows": [{"id": f"a{i}", "question": f"q{i}"} for i in range(12)]}
    b = {"source": "inline", "rows": [{"id": f"b{i}", "question": f"q{i}"} for i in range(12)]}
    with pytest.raises(DataError, match="train/test leakage"):
        materialize(make(tmp_path, {"a": a, "b": b}, split={"seed": 3}))


def test_split_sources_subset(tmp_path):
    gsm = {"source": "jsonl", "path": str(FIXTURES / "gsm8k.jsonl"), "adapter": "gsm8k"}
    math = {"source": "jsonl", "path": str(FIXTURES / "math.jsonl"), "adapter": "math"}
    v = make(tmp_path, {"gsm8k": gsm, "math": math}, split={"sources": ["gsm8k"]})
    assert "test.math" not in v.recipe.data.output_names()
    m = materialize(v)
    assert len(m.datasets["test"]) == len(m.datasets["test.gsm8k"]) == 6
    with pytest.raises(DataError, match="did you mean 'gsm8k'"):
        materialize(make(tmp_path, {"gsm8k": gsm}, split={"sources": ["gsm8"]}))
