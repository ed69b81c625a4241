"""The scorer interface: registry, routing by source/domain, batch scoring, row results, GRPO reward functions."""

from __future__ import annotations

import pytest

from engine.catalog import SCORERS
from engine.recipe.errors import EngineError
from engine.score.reward import completion_text, reward_function
from engine.score.scorer import make_scorer, route, row_result, sample_result, score_rows


def test_every_declared_scorer_is_executable_and_follows_the_interface():
    for name in SCORERS.names():
        assert SCORERS.is_executable(name), name
        if name != "llm_judge":  # needs a generator
            scorer = make_scorer(name)
            assert scorer.name == name and callable(scorer.score)


def test_importing_engine_score_stays_light():
    import subprocess
    import sys

    heavy = ("sklearn", "math_verify", "engine.score.scorer", "engine.score.code_exec", "engine.evaluate.metrics")
    code = f"import engine.score, sys; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_make_scorer_bad_options():
    with pytest.raises(EngineError, match="accepts: timeout, memory_mb, workers, k"):
        make_scorer("code_exec", timeot=3)


def test_route():
    rows = [{"source": "gsm8k", "domain": "math"}, {"source": "math", "domain": "math"},
            {"source": "squad2", "domain": "qa"}, {"source": "other", "domain": "code"}, {}]
    choice = {"gsm8k": ["gsm8k", "numeric_match"], "math": "math_verify", "qa": "squad_v2", "default": ["exact_match"]}
    assert route(rows, choice) == [["gsm8k", "numeric_match"], ["math_verify"], ["squad_v2"], ["exact_match"],
                                   ["exact_match"]]
    assert route(rows[:2], "exact_match") == [["exact_match"], ["exact_match"]]
    assert route(rows[:1], ["a", "b"]) == [["a", "b"]]
    assert route(rows[3:4], {"qa": "squad_v2"}) == [[]]              # no match, no default: not scored


def test_score_rows_routes_batches_and_adds_pass_at_k():
    calls = []

    class Spy:
        name = "spy"

        def score(self, rows, predictions):
            calls.append(len(rows))
            return [row_result([sample_result(1.0 if p == r["answers"][0] else 0.0) for p in ps])
                    for r, ps in zip(rows, predictions)]

    rows = [{"domain": "qa", "answers": ["x"]}, {"domain": "qa", "answers": ["y"]}, {"domain": "code"}]
    out = score_rows(rows, [["x", "z"], "y", None], {"qa": "spy"}, scorers={"spy": Spy()}, k=[1, 2])
    assert calls == [2]                                            # one batched call for both qa rows
    assert out[0]["spy"]["accuracy"] == 0.5 and out[0]["spy"]["pass@2"] == 1.0
    assert "pass@2" not in out[1]["spy"] and out[1]["spy"]["correct"] is True
    assert out[2] == {}
    with pytest.raises(EngineError, match="options"):
        score_rows(rows, [["x"]] * 3, "exact_match", options={"squad_v2": {}})


def test_row_result_definitions():
    samples = [sample_result(1.0, em=1.0), sample_result(0.5, correct=False, em=0.0), sample_result(None, reason="r")]
    result = row_result(samples, k=[1, 2, 3])
    assert result["score"] == 0.75 and result["accuracy"] == 0.5 and result["correct"] is False
    assert (result["n"], result["n_scored"], result["n_correct"], result["failed"]) == (3, 2, 1, 1)
    assert result["em"] == 0.5 and result["pass@1"] == 0.5 and result["pass@2"] == 1.0 and "pass@3" not in result
    nothing = row_result([sample_result(None, reason="r")])
    assert nothing["score"] is None and nothing["correct"] is None and nothing["accuracy"] is None


# ------------------------------------------------------------------------------------------ GRPO rewards


def test_reward_function_trl_signature_routing_and_metric():
    reward = reward_function({"gsm8k": "gsm8k", "squad2": "squad_v2"}, weight=2.0)
    assert reward.__name__ == "reward_gsm8k_squad_v2"
    completions = ["#### 12", [{"role": "assistant", "content": "#### 13"}], "Denver", "whatever"]
    columns = {"source": ["gsm8k", "gsm8k", "squad2", "unknown"], "answers": [["12"], ["12"], ["Denver Broncos"], ["x"]],
               "prompts": ["p"] * 4, "trainer_state": object()}
    assert reward(completions, **columns) == [2.0, 0.0, pytest.approx(2 * 2 / 3), None]
    em = reward_function({"squad2": "squad_v2", "gsm8k": "gsm8k"}, metric="em")
    assert em(completions, **columns) == [1.0, 0.0, 0.0, None]        # gsm8k has no em: its score is used


def test_reward_function_runs_code_in_the_sandbox():
    reward = reward_function({"code": "code_exec"}, options={"code_exec": {"timeout": 0.5}})
    tests = "def check(candidate):\n    assert candidate(2) == 4\n"
    columns = {"domain": ["code"] * 4, "prompt": ["def double(x):\n"] * 4, "tests": [tests] * 4,
               "entry_point": ["double"] * 4}
    completions = ["    return 2 * x\n", "```python\ndef double(x):\n    return x + x\n```", "    return x\n",
                   "    while True: pass"]                            # the loop is killed at the timeout
    assert reward(completions, **columns) == [1.0, 1.0, 0.0, 0.0]


def test_completion_text():
    assert completion_text("x") == "x"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"text": "b"}]}]) == "ab"
    assert completion_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) == "a"


def test_grpo_method_finds_the_reward_factories():
    import engine.score as score

    assert callable(score.reward_function) and callable(score.judge_reward_function)

    class Gen:
        def generate(self, prompts):
            return ["Score: 8/10"] * len(prompts)

    reward = score.judge_reward_function({"model": None, "scale": [0, 10]}, generator=Gen())
    assert reward(["an answer"], question=["q"]) == [0.8]
