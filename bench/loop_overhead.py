"""Loop overhead: a 2-epoch tiny judgment loop through `recipe run` vs the sum of its steps run standalone, and the
number of model loads per epoch.

    python bench/loop_overhead.py [--epochs 2] [--repeats 3] [--threads 1]

The loop is the shipped `know_thyself/judgment -p smoke` with the tiny Qwen2 of the loop tests (trained on half of
the smoke questions, tests/loop_support.py). Two sides, each a fresh process
with its own empty engine cache, run one after the other (repeats alternate; the median run is reported):

  loop        `recipe run ...` (the CLI in-process; model loads counted): the whole command's wall time.
  standalone  one script running the same steps in the same order on the same inputs, each step by itself: its own
              generation engines (nothing shared with the step before, closed after it, as separate scripts
              would), no cache, no report. Its process wall time is the baseline; the time inside each step is
              shown too.

Printed: loop / standalone (whole processes; target <= 1.10), the same without the report the loop writes, and the
strict loop / sum-of-step-times (which charges the loop with interpreter start-up, the torch/transformers imports
and exit that any script pays); per-step times on both sides; the loop's time line (start-up, data, steps,
executor between steps, summary, report, exit). Model loads are counted by wrapping
`PreTrainedModel.from_pretrained` (and `PeftModel.from_pretrained` for adapters) and attributed to the running
step; per epoch the target is one load per distinct model (the policy the epoch generates with, plus the previous
policy that `train` starts from).
"""

from __future__ import annotations

import time

STARTED = time.time()  # this process's start (before the heavy imports), for the loop's time line

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def recipe_args(model: Path, epochs: int) -> list[str]:
    from loop_support import smoke_judgment_args

    return [*smoke_judgment_args(model), "--set", f"loop.epochs={epochs}"]


# --- counting model loads ------------------------------------------------------------------------------------------

LOADS: list[dict] = []
CURRENT = {"step": None}


def count_loads() -> None:
    """Wrap the model loaders and the executor's step call, so every load is recorded with the step doing it."""
    from transformers import modeling_utils

    from engine.plan import execute

    original = modeling_utils.PreTrainedModel.from_pretrained.__func__

    def from_pretrained(cls, path, *args, **kwargs):
        LOADS.append({"step": CURRENT["step"], "path": str(path), "kind": "weights"})
        return original(cls, path, *args, **kwargs)

    modeling_utils.PreTrainedModel.from_pretrained = classmethod(from_pretrained)
    try:
        from peft import PeftModel

        peft_original = PeftModel.from_pretrained.__func__

        def peft_from_pretrained(cls, model, path, *args, **kwargs):
            LOADS.append({"step": CURRENT["step"], "path": str(path), "kind": "adapter"})
            return peft_original(cls, model, path, *args, **kwargs)

        PeftModel.from_pretrained = classmethod(peft_from_pretrained)
    except ImportError:
        pass

    step = execute.Executor._step

    def tracked(self, step_id, *args, **kwargs):
        CURRENT["step"] = step_id
        try:
            return step(self, step_id, *args, **kwargs)
        finally:
            CURRENT["step"] = None

    execute.Executor._step = tracked


def loads_per_epoch(loads: list[dict], run_dir: Path) -> dict:
    """epoch -> {"loads": N, "distinct": M, "by_step": {...}} (paths relative to the run where they are in it)."""
    out: dict = defaultdict(lambda: {"loads": 0, "models": set(), "by_step": defaultdict(int)})
    for load in loads:
        step = load["step"] or "(outside steps)"
        epoch = step.split("/")[0] if step.startswith("epoch_") else step
        out[epoch]["loads"] += 1
        out[epoch]["models"].add(load["path"])
        out[epoch]["by_step"][step.split("/")[-1]] += 1
    return {e: {"loads": v["loads"], "distinct": len(v["models"]), "by_step": dict(v["by_step"])} for e, v in sorted(out.items())}


# --- the two sides, each run as `python bench/loop_overhead.py --side NAME WORK` -------------------------------------


def side_loop(work: Path) -> dict:
    inputs = json.loads((work / "inputs.json").read_text())
    count_loads()
    from engine.cli.main import cli

    root = work / os.environ.get("LOOP_OVERHEAD_RUNS", "loop_runs")
    try:
        cli(["run", *inputs["args"], "--root", str(root)], prog_name="recipe", standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise
    run = next(p for p in root.glob("*/*") if (p / "state.json").is_file())
    return {"run": str(run), "loads": LOADS, "started": STARTED, "ended": time.time()}


def side_standalone(work: Path) -> dict:
    """Every step of the plan by itself: fresh generation engines per step, timed around the step function only."""
    inputs = json.loads((work / "inputs.json").read_text())
    count_loads()
    from engine import catalog
    from engine.cli.main import load
    from engine.generate.engines import POOL_KEY
    from engine.plan import execute
    from engine.plan.compile import compile_recipe
    from engine.recipe.loader import dump_yaml
    from engine.recipe.validate import validate
    from engine.runs.run_dir import RunDir

    args = inputs["args"]
    sets = tuple(args[i + 1] for i, a in enumerate(args) if a == "--set")
    loaded = load(args[0], ("smoke",), sets, ())
    plan = compile_recipe(validate(loaded))
    run = RunDir.create(root=work / "standalone_runs", name=plan["name"], recipe_hash=plan["recipe_hash"],
                        recipe_text=loaded.text, recipe_filename=str(loaded.path), resolved_yaml=dump_yaml(loaded.tree),
                        plan=plan, recipe_dir=loaded.path.parent)
    seconds: dict[str, float] = {}
    for use in ("collect", "label", "select", "train", "evaluate"):
        runner = catalog.STEPS.get(use)

        def timed(ctx, runner=runner):
            pool = ctx.resources.pop(POOL_KEY, None)  # nothing carried over from the step before
            if pool is not None:
                pool.close()
            start = time.perf_counter()
            try:
                return runner(ctx)
            finally:
                pool = ctx.resources.pop(POOL_KEY, None)  # a script ends: its engines go with it
                if pool is not None:
                    pool.close()
                seconds[ctx.step_id] = time.perf_counter() - start

        catalog.STEPS._entries[use] = timed
    if hasattr(execute.Executor, "_report"):
        execute.Executor._report = lambda self: None  # a script writes no report
    execute.Executor(run, plan, loaded.path.parent, use_cache=False).execute()
    return {"run": str(run.path), "loads": LOADS, "step_seconds": seconds, "started": STARTED, "ended": time.time()}


def timed_side(side: str, work: Path, env: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--side", side, str(work)], env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{side} side failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return wall, json.loads(line[7:])


def timeline(run: Path) -> dict:
    """Seconds from the run's events: per step, and the executor's phases."""
    from datetime import datetime

    started, steps, marks = {}, {}, {}
    for line in (run / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        t = datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()
        marks.setdefault(e["type"], t)
        if e["type"] == "step_started":
            started[e["step"]] = t
            marks.setdefault("first_step", t)
        elif e["type"] in ("step_done", "step_failed") and e.get("step") in started:
            steps[e["step"]] = t - started[e["step"]]
            marks["last_step_done"] = t
        elif e["type"] == "run_done":
            marks["run_done"] = t
    return {"steps": steps, "marks": marks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch/OMP threads (1 is steadiest, and fastest for a tiny model)")
    parser.add_argument("--side", choices=["loop", "standalone"], help=argparse.SUPPRESS)
    parser.add_argument("work", nargs="?", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.side:
        result = {"loop": side_loop, "standalone": side_standalone}[a.side](Path(a.work))
        print("RESULT " + json.dumps(result))
        return

    from loop_support import train_on_half

    work = Path(tempfile.mkdtemp(prefix="loop-overhead-"))
    model = train_on_half(work / "model")
    (work / "inputs.json").write_text(json.dumps({"args": recipe_args(model, a.epochs)}))
    base_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(a.threads),
                "MKL_NUM_THREADS": str(a.threads), "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    print(f"{a.epochs}-epoch tiny judgment loop (know_thyself/judgment -p smoke, tiny Qwen2 trained on half the questions), "
          f"{a.threads} thread(s), {a.repeats} repeat(s); work dir {work}")
    results = []
    for i in range(a.repeats):
        row = {}
        for side in ("loop", "standalone"):
            env = {**base_env, "RECIPE_ENGINE_CACHE": str(work / f"cache_{side}_{i}"), "LOOP_OVERHEAD_RUNS": f"loop_runs_{i}"}
            wall, result = timed_side(side, work, env)
            row[side] = {"wall": wall, **result}
        row["timeline"] = timeline(Path(row["loop"]["run"]))
        row["report"] = row["loop"]["ended"] - row["timeline"]["marks"]["run_done"]
        row["standalone_sum"] = sum(row["standalone"]["step_seconds"].values())
        row["ratio"] = row["loop"]["wall"] / row["standalone"]["wall"]
        row["ratio_no_report"] = (row["loop"]["wall"] - row["report"]) / row["standalone"]["wall"]
        row["strict"] = row["loop"]["wall"] / row["standalone_sum"]
        results.append(row)
        print(f"run {i}: `recipe run` {row['loop']['wall']:.2f}s (report {row['report']:.2f}s); standalone script "
              f"{row['standalone']['wall']:.2f}s (its steps {row['standalone_sum']:.2f}s); ratio {row['ratio']:.3f}")
    best = sorted(results, key=lambda r: r["ratio"])[(len(results) - 1) // 2]  # the median run (by ratio)
    loop, by_step = best["timeline"], best["standalone"]["step_seconds"]
    marks = loop["marks"]
    verdict = lambda r: "OK" if r <= 1.10 else "OVER"  # noqa: E731
    ratios = ", ".join(f"{r['ratio']:.3f}" for r in results)
    print(f"\nmedian of {len(results)} run(s) (ratios: {ratios})")
    print(f"loop / standalone, whole processes:        {best['ratio']:.3f} (target <= 1.10) {verdict(best['ratio'])}")
    print(f"  the same without the loop's report:      {best['ratio_no_report']:.3f} {verdict(best['ratio_no_report'])}")
    print(f"loop process / standalone step time only:  {best['strict']:.3f} (start-up, imports, data, exit: all on the loop side)")
    print(f"\n{'step':<26}{'loop s':>9}{'standalone s':>14}")
    for step in by_step:
        print(f"{step:<26}{loop['steps'].get(step, float('nan')):>9.2f}{by_step[step]:>14.2f}")
    print(f"{'sum':<26}{sum(loop['steps'].values()):>9.2f}{best['standalone_sum']:>14.2f}")
    phases = [("start-up, validate, compile, lock", best["loop"]["started"], marks["run_created"]),
              ("data, model resolution", marks["run_started"], marks["first_step"]),
              ("steps (with executor between them)", marks["first_step"], marks["last_step_done"]),
              ("summary, metrics", marks["last_step_done"], marks["run_done"]),
              ("report", marks["run_done"], best["loop"]["ended"])]
    between = marks["last_step_done"] - marks["first_step"] - sum(loop["steps"].values())
    print("\n`recipe run` time line:")
    for name, t0, t1 in phases:
        print(f"  {name:<36}{t1 - t0:>7.2f}s")
        if name.startswith("steps"):
            print(f"  {'  of which executor between steps':<36}{between:>7.2f}s")
    print(f"  {'interpreter start and exit':<36}{best['loop']['wall'] - (best['loop']['ended'] - best['loop']['started']):>7.2f}s")
    for side in ("loop", "standalone"):
        print(f"\nmodel loads per epoch, {side}:")
        for epoch, info in loads_per_epoch(best[side]["loads"], Path(best[side]["run"])).items():
            ok = "OK" if info["loads"] == info["distinct"] else "OVER"
            print(f"  {epoch:<10} {info['loads']} load(s) of {info['distinct']} distinct model(s) {ok}   {info['by_step']}")


if __name__ == "__main__":
    main()
