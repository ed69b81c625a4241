"""Engine overhead: the same tiny SFT (>= 200 optimizer steps) through the engine and through a plain TRL script.

    python bench/overhead.py [--steps 200] [--rows 400] [--repeats 1]

Both run as separate processes, one after the other, on the same tiny Qwen2 (built locally) and the same rows.
Prints the wall-time ratio engine/plain of the training phase (`trainer.train()`; target <= 1.05) and of the whole
command (process start to exit; target <= 1.10), and the peak RSS of both.

The engine side is `recipe run RECIPE` when this version can execute the recipe end to end; otherwise (the data
step not yet executable) it compiles the same recipe and runs its train step through the train step executor
(engine.plan.steps.train) with the Dataset artifact given directly — the output says which.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEMPLATE = {"fields": ["question"], "messages": [{"role": "user", "content": "{{ question }}"}], "target": "{{ response }}"}


def make_inputs(work: Path, rows: int, steps: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from engine.models.tiny import build_tiny

    model = build_tiny({"arch": "qwen2", "seed": 0}, work / "tiny_qwen2")
    data = work / "rows.jsonl"
    with open(data, "w") as f:
        for i in range(rows):
            a, b = i % 37, (i * 7) % 41
            f.write(json.dumps({"id": str(i), "question": f"What is {a} plus {b}?", "response": f"{a} + {b} = {a + b}."}) + "\n")
    recipe = {"recipe": 1, "kind": "train", "name": "overhead", "seed": 0,
              "model": {"source": "local", "path": str(model)},
              "data": {"sources": {"train": {"source": "jsonl", "path": str(data)}}},
              "launch": {"gpus": 0}, "tracking": {"backends": ["none"]},
              "train": {"method": "sft", "data": "${data.train}", "template": TEMPLATE, "max_steps": steps,
                        "batch_size": 4, "learning_rate": 1e-4, "logging_steps": 10, "max_length": 128}}
    (work / "recipe.yaml").write_text(json.dumps(recipe, indent=1))
    return {"model": str(model), "data": str(data), "recipe": str(work / "recipe.yaml"), "steps": steps}


# --- the two sides, each run as `python bench/overhead.py --side NAME WORK` ------------------------------------


def side_plain(work: Path) -> dict:
    """What a user would write with TRL directly (same rows, template, hyperparameters)."""
    inputs = json.loads((work / "inputs.json").read_text())
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in open(inputs["data"])]
    examples = [{"prompt": [{"role": "user", "content": r["question"]}],
                 "completion": [{"role": "assistant", "content": r["response"]}]} for r in rows]
    tok = AutoTokenizer.from_pretrained(inputs["model"])
    model = AutoModelForCausalLM.from_pretrained(inputs["model"], dtype="float32")
    args = SFTConfig(output_dir=str(work / "plain_out"), max_steps=inputs["steps"], per_device_train_batch_size=4,
                     learning_rate=1e-4, logging_steps=10, save_strategy="no", report_to="none", use_cpu=True,
                     max_length=128, activation_checkpointing=False, seed=0, completion_only_loss=True,
                     bf16=False, fp16=False)  # TRL defaults bf16 on; the engine trains fp32 on CPU
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples), processing_class=tok)
    start = time.time()
    out = trainer.train()
    train_s = time.time() - start
    trainer.save_model(str(work / "plain_model"))
    return {"train_s": train_s, "steps": trainer.state.global_step, "loss": out.metrics["train_loss"]}


def side_engine(work: Path) -> dict:
    """The engine's train step executor on the compiled recipe (used when `recipe run` cannot run it yet)."""
    inputs = json.loads((work / "inputs.json").read_text())
    from engine.models.resolve import resolve_model
    from engine.plan.compile import compile_recipe
    from engine.plan.context import StepContext
    from engine.plan.steps.train import run
    from engine.recipe.loader import load_recipe
    from engine.recipe.validate import validate
    from engine.runs.events import EventLog

    plan = compile_recipe(validate(load_recipe(inputs["recipe"])))
    step = plan["graph"]["steps"]["train"]
    run_dir = work / "engine_run"
    step_dir = run_dir / "steps" / "train"
    step_dir.mkdir(parents=True, exist_ok=True)
    rows = sum(1 for _ in open(inputs["data"]))
    ctx = StepContext(step_id="train", step_dir=step_dir, step=step, plan=plan, run_dir=run_dir, recipe_dir=work, seed=0,
                      inputs={"model": resolve_model(plan["model"], work),
                              "data": {"type": "Dataset", "path": inputs["data"], "rows": rows}},
                      events=EventLog(run_dir / "events.jsonl"))
    out = run(ctx)
    result = json.loads((step_dir / "result.json").read_text())
    return {"train_s": result["seconds"]["train"], "steps": result["global_step"], "loss": out["metrics"]["values"]["train_loss"]}


def engine_via_recipe_run(work: Path) -> bool:
    """Whether `recipe run` can execute the bench recipe in this version."""
    from engine.plan.compile import compile_recipe
    from engine.plan.execute import not_executable
    from engine.recipe.loader import load_recipe
    from engine.recipe.validate import validate

    return not not_executable(compile_recipe(validate(load_recipe(work / "recipe.yaml"))))


def timed(argv: list[str], env: dict) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MiB, stdout) of one child process."""
    start = time.time()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed with {proc.returncode}")
    return wall, usage.ru_maxrss // 1024, stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch/OMP threads of both sides (1 is steadiest on a shared machine)")
    parser.add_argument("--side", choices=["plain", "engine"], help=argparse.SUPPRESS)
    parser.add_argument("work", nargs="?", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.side:
        result = (side_plain if a.side == "plain" else side_engine)(Path(a.work))
        print("RESULT " + json.dumps(result))
        return
    work = Path(tempfile.mkdtemp(prefix="overhead-"))
    inputs = make_inputs(work, a.rows, a.steps)
    (work / "inputs.json").write_text(json.dumps(inputs))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads), "RECIPE_ENGINE_RUNS": str(work / "runs"),
           "RECIPE_ENGINE_CACHE": str(work / "cache")}
    via_run = engine_via_recipe_run(work)
    me = str(Path(__file__).resolve())
    engine_argv = ([str(Path(sys.executable).parent / "recipe"), "run", inputs["recipe"]] if via_run
                   else [sys.executable, me, "--side", "engine", str(work)])
    print(f"{a.steps} steps, {a.repeats} repeat(s) alternating plain/engine, {a.threads} thread(s); ratios use the best run of each")
    print(f"engine side: {'`recipe run`' if via_run else 'train step executor (recipe run cannot execute the data step yet)'}")
    rows = []
    for i in range(a.repeats):
        for name, argv in (("plain", [sys.executable, me, "--side", "plain", str(work)]), ("engine", engine_argv)):
            wall, rss, out = timed(argv, env)
            if name == "engine" and via_run:
                result_file = next((work / "runs").rglob("result.json"))
                res = json.loads(result_file.read_text())
                result = {"train_s": res["seconds"]["train"], "steps": res["global_step"], "loss": res["metrics"]["train_loss"]}
            else:
                result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
            rows.append({"side": name, "repeat": i, "wall_s": round(wall, 2), "train_s": round(result["train_s"], 2),
                         "peak_rss_mib": rss, "steps": result["steps"], "loss": round(result["loss"], 4)})
    for r in rows:
        print(f"{r['side']:>6}  run {r['repeat']}  steps {r['steps']}  train {r['train_s']:7.2f}s  whole {r['wall_s']:7.2f}s  "
              f"peak RSS {r['peak_rss_mib']} MiB  loss {r['loss']}")

    def best(side: str, key: str) -> float:
        return min(r[key] for r in rows if r["side"] == side)

    train_ratio = best("engine", "train_s") / best("plain", "train_s")
    whole_ratio = best("engine", "wall_s") / best("plain", "wall_s")
    print(f"training phase ratio engine/plain: {train_ratio:.3f} (target <= 1.05) {'OK' if train_ratio <= 1.05 else 'OVER'}")
    print(f"whole command ratio engine/plain:  {whole_ratio:.3f} (target <= 1.10) {'OK' if whole_ratio <= 1.10 else 'OVER'}")
    print(f"peak RSS: engine {max(r['peak_rss_mib'] for r in rows if r['side'] == 'engine')} MiB, "
          f"plain {max(r['peak_rss_mib'] for r in rows if r['side'] == 'plain')} MiB")


if __name__ == "__main__":
    main()
