"""Mixing (seed 001 Plan C): ratios within 1%, oversampling recorded, determinism, unsatisfiable ratios."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from engine.data.build import materialize
from engine.data.mix import Unit, UnitPlan, draw, plan_mix
from engine.data.sources import DataError
from engine.recipe.loader import load_recipe
from engine.recipe.models.data import Mix
from engine.recipe.validate import validate

PLAN_C = {"math": 4, "qa": 3, "code": 3}
# the seed's train volumes (5:1 split of each source's train split)
SEED_UNITS = [Unit("gsm8k", "math", 6228), Unit("math", "math", 6250), Unit("squad2", "qa", 72351),
              Unit("hotpotqa", "qa", 74873), Unit("humaneval", "code", 137), Unit("mbpp", "code", 356)]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RECIPE_ENGINE_CACHE", str(tmp_path_factory.getbasetemp() / "engine-cache"))


def mix(**kw) -> Mix:
    return Mix.model_validate({"domains": PLAN_C, **kw})


def shares(plans: list[UnitPlan]) -> tuple[dict, dict]:
    total = sum(p.rows for p in plans)
    by_domain: Counter = Counter()
    for p in plans:
        by_domain[p.unit.domain] += p.rows
    return ({d: n / total for d, n in by_domain.items()}, {p.unit.source: p.rows / total for p in plans})


@pytest.mark.parametrize("size", [1000, 9973, 160000])
def test_plan_c_ratios_within_one_percent(size):
    plans, warnings = plan_mix(SEED_UNITS, mix(size=size), "train_mixed")
    assert not warnings and sum(p.rows for p in plans) == size
    domains, sources = shares(plans)
    for d, w in PLAN_C.items():
        assert abs(domains[d] - w / 10) <= 0.01
    for p in plans:                                      # 50:50 within each domain
        assert abs(sources[p.unit.source] - PLAN_C[p.unit.domain] / 20) <= 0.01


def test_small_sources_are_oversampled_and_the_factor_recorded():
    plans, _ = plan_mix(SEED_UNITS, mix(size=160000), "train_mixed")
    by = {p.unit.source: p for p in plans}
    assert by["humaneval"].rows == 24000 and by["humaneval"].unique == 137
    assert by["humaneval"].factor == pytest.approx(24000 / 137)
    assert by["squad2"].rows == 24000 and by["squad2"].factor < 1     # large sources are subsampled
    picks = draw(by["humaneval"], 42)
    counts = np.bincount(picks, minlength=137)
    assert len(picks) == 24000 and counts.min() >= 175 and counts.max() <= 176    # every row k or k+1 times
    sub = draw(by["squad2"], 42)
    assert len(set(sub.tolist())) == len(sub) == 24000                         # no repeats when not oversampled
    assert (draw(by["squad2"], 42) == sub).all() and not (draw(by["squad2"], 43) == sub).all()


def test_default_size_is_the_largest_without_oversampling():
    plans, _ = plan_mix(SEED_UNITS, mix(), "m")
    size = sum(p.rows for p in plans)
    assert size == int(137 / 0.15) and all(p.rows <= p.unit.available for p in plans)


def test_unsatisfiable_ratios():
    with pytest.raises(DataError) as err:
        plan_mix(SEED_UNITS, mix(size=160000, oversample=False), "m")
    text = str(err.value)
    assert "unsatisfiable ratios without oversampling" in text and "'humaneval' has 137 rows" in text
    assert "set `oversample: true`, or a `size` of at most 913" in text
    with pytest.raises(DataError, match=r"domain 'code' has no source to draw from \(domains with rows: math, qa\)"):
        plan_mix([u for u in SEED_UNITS if u.domain != "code"], mix(size=100), "m")
    with pytest.raises(DataError, match="domain weights must be positive"):
        plan_mix(SEED_UNITS, Mix.model_validate({"domains": {"math": 0, "qa": 1}}), "m")
    with pytest.raises(DataError, match=r"source\(s\) mbpp have no rows"):
        plan_mix([*SEED_UNITS[:5], Unit("mbpp", "code", 0)], mix(), "m")


def test_within_weights_and_natural():
    plans, warnings = plan_mix(SEED_UNITS, mix(size=10000, within={"gsm8k": 3, "math": 1, "squad2": 1,
                                                                   "hotpotqa": 1, "humaneval": 1, "mbpp": 0}), "m")
    _, sources = shares(plans)
    assert abs(sources["gsm8k"] - 0.3) <= 0.01 and abs(sources["math"] - 0.1) <= 0.01 and "mbpp" not in sources
    assert any("'mbpp' is not drawn" in w for w in warnings)
    plans, _ = plan_mix(SEED_UNITS, mix(size=10000, within="natural"), "m")
    _, sources = shares(plans)
    assert sources["mbpp"] / sources["humaneval"] == pytest.approx(356 / 137, rel=0.02)
    with pytest.raises(DataError, match="did you mean 'gsm8k'"):
        plan_mix(SEED_UNITS, mix(within={"gsm8": 1}), "m")


def test_domains_not_in_the_mix_are_reported():
    plans, warnings = plan_mix([*SEED_UNITS, Unit("tutor", "tutoring", 50)], mix(size=100), "m")
    assert "tutor" not in {p.unit.source for p in plans}
    assert any("domain 'tutoring' is not in `domains`" in w for w in warnings)


# --------------------------------------------------------------------------------------- through the engine


def make(tmp_path: Path, sources: dict, **data) -> object:
    doc = {"recipe": 1, "kind": "eval", "name": "t", "model": {"source": "hub", "path": "org/model"},
           "data": {"sources": sources, **data},
           "evaluate": {"use": "evaluate", "data": "${data.%s}" % next(iter(sources)), "scorer": "exact_match"}}
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(doc, indent=1))
    return validate(load_recipe(path))


SIZES = {"a": ("math", 300), "b": ("math", 40), "c": ("qa", 500), "d": ("qa", 200), "e": ("code", 30), "f": ("code", 60)}


@pytest.fixture
def sources(tmp_path) -> dict:
    out = {}
    for name, (domain, n) in SIZES.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"id": f"{name}-{i}", "question": f"{name} question {i}?",
                                            "answers": [str(i)]}) + "\n" for i in range(n)))
        out[name] = {"source": "jsonl", "path": str(path), "domain": domain}
    return out


def test_mix_through_the_engine(tmp_path, sources):
    v = make(tmp_path, sources, split={"ratios": {"train": 5, "test": 1}},
             mix={"train_mixed": {"from": "train", "domains": PLAN_C, "size": 5000},
                  "test_mixed": {"from": "test", "domains": PLAN_C, "oversample": False}})
    m = materialize(v)
    rows = list(m.datasets["train_mixed"])
    assert len(rows) == 5000
    counts = Counter(r["domain"] for r in rows)
    for d, w in PLAN_C.items():
        assert abs(counts[d] / 5000 - w / 10) <= 0.01
    per_source = Counter(r["source"] for r in rows)
    assert abs(per_source["a"] - per_source["b"]) <= 1        # 50:50 within math despite 300 vs 40 rows
    train_ids = {r["id"] for r in m.datasets["train"]}
    assert {r["id"] for r in rows} <= train_ids                 # drawn from the train split only
    info = m.info["mixes"]["train_mixed"]
    assert info["rows"] == 5000 and info["unique_rows"] == len(train_ids)
    assert info["sources"]["e"]["oversampled"] and info["sources"]["e"]["oversampling_factor"] == pytest.approx(750 / 25)
    assert info["domains"]["math"]["achieved"] == pytest.approx(0.4, abs=0.01)
    assert [r["source"] for r in rows[:50]] != sorted(r["source"] for r in rows[:50])   # shuffled
    test_rows = list(m.datasets["test_mixed"])
    assert not {r["id"] for r in test_rows} & train_ids
    assert len(test_rows) == len({r["id"] for r in test_rows})   # no oversampling: no repeats
    again = list(materialize(v, names=["train_mixed"]).datasets["train_mixed"])
    assert [r["id"] for r in again] == [r["id"] for r in rows]   # deterministic


def test_mix_from_a_split_that_does_not_exist(tmp_path, sources):
    with pytest.raises(DataError, match=r"data.mix.m.from: 'tran' is not a split; did you mean 'train'"):
        materialize(make(tmp_path, sources, split={}, mix={"m": {"from": "tran", "domains": PLAN_C}}))
    with pytest.raises(DataError, match="the recipe has no `split:`"):
        materialize(make(tmp_path, sources, mix={"m": {"from": "train", "domains": PLAN_C}}))
