"""MBPP (`google-research-datasets/mbpp`), config `full` {task_id, text, code, test_list, test_setup_code,
challenge_test_list} or `sanitized` {task_id, prompt, code, test_imports, test_list, source_file}.

`question` is the task description; `prompt` the description followed by the tests the code must pass (the usual
MBPP prompt, so the model learns the function name); `tests` a program (setup code or imports, then the asserts);
`entry_point` the function the tests call. `test_list` is kept. `challenge_tests: true` appends the full config's
challenge tests to `tests`.
"""

from __future__ import annotations

import re

from engine.data.adapters import need, record

DOMAIN = "code"
ARGS = {"challenge_tests": False}

_CALL = re.compile(r"([A-Za-z_]\w*)\s*\(")
_DEF = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)


def entry_point(code: str, tests: list[str]) -> str | None:
    """The function defined in `code` that the first test calls (else the first function defined)."""
    defined = _DEF.findall(code)
    called = _CALL.findall(tests[0]) if tests else []
    for name in called:
        if name in defined:
            return name
    return defined[0] if defined else (called[0] if called else None)


def adapt(row: dict, *, index: int, args: dict) -> dict | None:
    description = row.get("text") or need(row, "prompt")
    code = need(row, "code")
    tests = list(need(row, "test_list"))
    setup = row.get("test_setup_code") or "\n".join(row.get("test_imports") or [])
    program = "\n".join(tests + (list(row.get("challenge_test_list") or []) if args["challenge_tests"] else []))
    prompt = f"{description.strip()}\nYour code should pass these tests:\n\n" + "\n".join(tests)
    return record(id=str(need(row, "task_id")), question=description.strip(), prompt=prompt, solution=code,
                  tests=(setup.strip() + "\n\n" if setup.strip() else "") + program + "\n",
                  entry_point=entry_point(code, tests), test_list=tests)
