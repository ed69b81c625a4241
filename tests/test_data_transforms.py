"""Transforms: rename, map, filter, dedupe, limit, sample, tag, function; both executors agree."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from engine.data.build import materialize
from engine.data.executors import run_dataset, run_rows, sample_indices
from engine.data.sources import DataError, inline_rows, resolve
from engine.data.transforms import compile_pipeline
from engine.recipe.loader import load_recipe
from engine.recipe.validate import validate

FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RECIPE_ENGINE_CACHE", str(tmp_path_factory.getbasetemp() / "engine-cache"))


def make(tmp_path: Path, sources: dict, seed: int = 0) -> object:
    first = next(iter(sources))
    doc = {"recipe": 1, "kind": "eval", "name": "t", "seed": seed, "model": {"source": "hub", "path": "org/model"},
           "data": {"sources": sources},
           "evaluate": {"use": "evaluate", "data": "${data.%s}" % first, "scorer": "exact_match"}}
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(doc, indent=1))
    return validate(load_recipe(path))


def build(tmp_path: Path, source: dict, seed: int = 0) -> list[dict]:
    v = make(tmp_path, {"s": source}, seed)
    return list(materialize(v, names=["s"]).datasets["s"])


def gsm8k(**extra) -> dict:
    return {"source": "jsonl", "path": str(FIXTURES / "gsm8k.jsonl"), "adapter": "gsm8k", **extra}


ROWS = [{"id": f"r{i}", "question": f"q{i % 7}", "n": i, "tags": ["a"] if i % 2 else []} for i in range(40)]


def test_rename_map_filter_in_one_pass(tmp_path):
    rows = build(tmp_path, {"source": "inline", "rows": ROWS, "transforms": [
        {"rename": {"n": "number"}},
        {"map": {"answers": "[number * 2]", "parity": "'odd' if number % 2 else 'even'"}},
        {"filter": "parity == 'odd' and number > 10"},
    ]})
    assert [r["number"] for r in rows] == [i for i in range(11, 40, 2)]
    assert rows[0]["answers"] == ["22"] and rows[0]["parity"] == "odd" and "n" not in rows[0]


def test_rename_onto_an_empty_common_field(tmp_path):
    rows = build(tmp_path, {"source": "inline", "rows": [{"q": "hello?"}], "transforms": [{"rename": {"q": "question"}}]})
    assert rows[0]["question"] == "hello?" and "q" not in rows[0]


def test_bad_transforms_name_the_fields_that_exist(tmp_path):
    with pytest.raises(DataError) as err:
        build(tmp_path, {"source": "inline", "rows": ROWS, "transforms": [{"filter": "nn > 3"}]})
    assert "transforms[0] (filter)" in str(err.value) and "'nn' is undefined" in str(err.value)
    assert "available names:" in str(err.value) and "did you mean 'n'?" in str(err.value)
    with pytest.raises(DataError, match=r"transforms\[0\] \(rename\): the row has no field 'qestion'.*did you mean 'question'"):
        build(tmp_path, {"source": "inline", "rows": ROWS, "transforms": [{"rename": {"qestion": "q"}}]})
    with pytest.raises(DataError, match="cannot rename 'n' to 'question': the row already has a field 'question'"):
        build(tmp_path, {"source": "inline", "rows": ROWS, "transforms": [{"rename": {"n": "question"}}]})
    with pytest.raises(DataError, match=r"transforms\[0\] \(dedupe\): .*no field 'qq'"):
        build(tmp_path, {"source": "inline", "rows": ROWS, "transforms": [{"dedupe": "qq"}]})


def test_errors_in_transforms_point_at_the_file_line(tmp_path):
    with pytest.raises(DataError, match=r"gsm8k.jsonl:1: source 's', transforms: transforms\[0\] \(map\)"):
        build(tmp_path, gsm8k(transforms=[{"map": {"x": "answers[5]"}}]))


def test_dedupe_limit(tmp_path):
    rows = build(tmp_path, {"source": "inline", "rows": ROWS, "transforms": [{"dedupe": "question"}]})
    assert [r["question"] for r in rows] == [f"q{i}" for i in range(7)] and rows[0]["id"] == "r0"
    rows = build(tmp_path, {"source": "inline", "rows": ROWS, "transforms": [{"dedupe": ["question", "tags"]}]})
    assert len(rows) == 14                         # list values dedupe too
    rows = build(tmp_path, {"source": "inline", "rows": ROWS, "transforms": [{"limit": 3}]})
    assert [r["id"] for r in rows] == ["r0", "r1", "r2"]


def test_sample_is_seeded_and_independent_of_input_order(tmp_path):
    a = build(tmp_path, gsm8k(sample=10, seed=1))
    b = build(tmp_path, gsm8k(sample=10, seed=1))
    c = build(tmp_path, gsm8k(sample=10, seed=2))
    assert len(a) == 10 and [r["id"] for r in a] == [r["id"] for r in b] and {r["id"] for r in a} != {r["id"] for r in c}
    lines = (FIXTURES / "gsm8k.jsonl").read_text().splitlines()
    random.Random(0).shuffle(lines)
    (tmp_path / "shuffled.jsonl").write_text("\n".join(lines) + "\n")
    d = build(tmp_path, gsm8k(path=str(tmp_path / "shuffled.jsonl"), sample=10, seed=1))
    assert {r["id"] for r in d} == {r["id"] for r in a}
    # the recipe seed is the default; a sample transform takes its own seed
    assert {r["id"] for r in build(tmp_path, gsm8k(sample=10), seed=1)} == {r["id"] for r in a}
    e = build(tmp_path, gsm8k(transforms=[{"sample": {"n": 10, "seed": 1}}]))
    assert {r["id"] for r in e} == {r["id"] for r in a}
    assert len(build(tmp_path, gsm8k(sample=500))) == 36          # more than there is: every row


def test_sample_indices():
    ids = [f"id{i}" for i in range(100)]
    picked = sample_indices(ids, 30, 5)
    assert len(picked) == 30 and picked == sorted(picked) and picked == sample_indices(ids, 30, 5)
    assert sample_indices(ids, 200, 5) == list(range(100))
    assert set(sample_indices(ids, 30, 5)) != set(sample_indices(ids, 30, 6))


def test_row_and_dataset_executors_agree(tmp_path):
    import datasets

    source = {"source": "inline", "rows": ROWS, "transforms": [
        {"map": {"half": "n // 2"}}, {"dedupe": "half"}, {"filter": "n > 3"}, {"sample": {"n": 8, "seed": 3}},
        {"limit": 6}, {"tag": "taxonomy"}]}
    v = make(tmp_path, {"s": source})
    ref = resolve("s", v.recipe.data.sources["s"], v.loaded.location)
    p = compile_pipeline(ref)
    by_rows = list(run_rows(p, inline_rows(ref)))
    by_dataset = list(run_dataset(p, datasets.Dataset.from_list(ROWS), fingerprint="x"))
    assert len(by_rows) == 6
    assert by_rows == by_dataset


def test_transforms_see_absent_common_fields_as_none(tmp_path):
    rows = build(tmp_path, gsm8k(transforms=[{"filter": "context is none and solution is not none"},
                                             {"map": {"context": "'worked: ' ~ solution[:10]"}}]))
    assert len(rows) == 36 and rows[0]["context"].startswith("worked: ")


def test_tag_transform_adds_topics_and_grade(tmp_path):
    rows = build(tmp_path, {"source": "jsonl", "path": str(FIXTURES / "tutoring.jsonl"), "adapter": "tutoring",
                            "transforms": [{"tag": "taxonomy"}]})
    assert rows[0]["topic_tags"][:2] == ["fractions", "addition"] and rows[0]["grade"] == "6"   # kept
    assert "algebra" in rows[2]["topic_tags"]
    rows = build(tmp_path, gsm8k(transforms=[{"tag": {"grade": 6}}]))
    assert {r["grade"] for r in rows} == {"6"} and all(r["topic_tags"] for r in rows)


def test_function_transform_from_the_recipe_directory(tmp_path):
    (tmp_path / "my_rows.py").write_text(
        "def shout(row):\n    row['question'] = row['question'].upper()\n    return row\n\n"
        "def drop_odd(row):\n    return None if row['n'] % 2 else row\n\n"
        "def broken(row):\n    return 'nope'\n")
    rows = build(tmp_path, {"source": "inline", "rows": ROWS, "transforms": [{"function": "my_rows:shout"},
                                                                         {"function": "my_rows:drop_odd"}]})
    assert len(rows) == 20 and rows[0]["question"] == "Q0"
    with pytest.raises(DataError, match="returned str; a transform function returns the row"):
        build(tmp_path, {"source": "inline", "rows": ROWS, "transforms": [{"function": "my_rows:broken"}]})
    (tmp_path / "my_sets.py").write_text("def tag(row):\n    row['tags'] = {'a', 'b'}\n    return row\n")
    with pytest.raises(DataError, match="source 's': field 'tags': a value of type set cannot be stored"):
        build(tmp_path, {"source": "jsonl", "path": str(FIXTURES / "gsm8k.jsonl"), "transforms": [{"function": "my_sets:tag"}]})
    with pytest.raises(DataError, match="module 'nowhere' not found"):
        build(tmp_path, {"source": "inline", "rows": ROWS, "transforms": [{"function": "nowhere:f"}]})


def test_domain_from_recipe_overrides_the_adapter(tmp_path):
    rows = build(tmp_path, gsm8k(domain="arith"))
    assert {r["domain"] for r in rows} == {"arith"}
    assert {r["domain"] for r in build(tmp_path, gsm8k())} == {"math"}
