"""Data mixing: a 200,000-row Plan C mix of six synthetic sources through the engine and with plain `datasets`.

    python bench/data_mix.py [--size 200000] [--scale 1.0] [--repeats 1] [--all-outputs]

Six JSONL sources with the seed-001 train volumes (GSM8K 6,228, MATH 6,250, SQuAD 72,351, HotpotQA 74,873,
HumanEval 137, MBPP 356 rows; `--scale` multiplies them) are mixed 4:3:3 across domains, 50:50 within, into `--size`
rows, small sources oversampled, and written as one JSONL file:

- engine: `build_data(validated_recipe, out, names=["train_mixed"])` (load, common records, mix, write; with
  `--all-outputs` it writes every data output, the sources too);
- plain: `datasets.load_dataset("json")` per source + a `domain` column, `select` with the same per-source counts
  (repeats for the small ones), `concatenate_datasets` + `shuffle` + `select`, `to_json`.

Each side runs in its own process with its own cache, after its imports; the timing covers the work only. Prints
both times (wall and CPU), the ratio engine/plain (target <= 1.5) and each side's memory growth (peak RSS over the
RSS after imports). The sides alternate and the best of `--repeats` runs of each is reported (the CPU time is less
disturbed by other load on a shared machine than the wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"gsm8k": ("math", 6228), "math": ("math", 6250), "squad2": ("qa", 72351), "hotpotqa": ("qa", 74873),
           "humaneval": ("code", 137), "mbpp": ("code", 356)}
PLAN_C = {"math": 4, "qa": 3, "code": 3}


def make_sources(work: Path, scale: float) -> dict[str, Path]:
    rng = random.Random(0)
    words = "the a of to in is was for on that with as by at from it an be this are which".split()
    paths = {}
    for name, (domain, n) in SOURCES.items():
        path = work / f"{name}.jsonl"
        with open(path, "w") as f:
            for i in range(max(1, int(n * scale))):
                text = " ".join(rng.choice(words) for _ in range(rng.randint(12, 40)))
                f.write(json.dumps({"id": f"{name}-{i}", "question": f"{text} ({name} {i})?",
                                    "answer": str(rng.randint(0, 10_000))}) + "\n")
        paths[name] = path
    return paths


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the two sides, each run as `python bench/data_mix.py --side NAME WORK` ----------------------------------


def side_engine(work: Path, args: dict) -> dict:
    sys.path.insert(0, str(ROOT))
    os.environ["RECIPE_ENGINE_CACHE"] = str(work / "engine-cache")
    import datasets  # noqa: F401  (post-import baseline includes it, as on the plain side)

    from engine.data.build import build_data
    from engine.recipe.loader import load_recipe
    from engine.recipe.validate import validate

    base = rss_mb()
    t, c = time.perf_counter(), cpu_s()
    v = validate(load_recipe(work / "recipe.yaml"))
    out = build_data(v, work / "engine-out", names=None if args["all_outputs"] else ["train_mixed"])
    elapsed, cpu = time.perf_counter() - t, cpu_s() - c
    return {"seconds": elapsed, "cpu": cpu, "rows": out["train_mixed"].rows, "base_mb": base, "peak_mb": peak_mb(),
            "file": str(out["train_mixed"].path)}


def side_plain(work: Path, args: dict) -> dict:
    import datasets
    import numpy as np
    from datasets import concatenate_datasets, load_dataset

    datasets.disable_progress_bars()
    base = rss_mb()
    t, c = time.perf_counter(), cpu_s()
    counts = json.loads((work / "counts.json").read_text())
    parts = []
    for name, (domain, _) in SOURCES.items():
        ds = load_dataset("json", data_files=str(work / f"{name}.jsonl"), split="train",
                          cache_dir=str(work / "plain-cache"))
        ds = ds.add_column("domain", [domain] * len(ds))
        n = counts[name]
        rng = np.random.default_rng(42)
        idx = np.concatenate([np.tile(np.arange(len(ds)), n // len(ds)), rng.choice(len(ds), n % len(ds), replace=False)])
        parts.append(ds.select(idx))
    mixed = concatenate_datasets(parts).shuffle(seed=42).select(range(sum(counts.values())))
    path = work / "plain-out" / "train_mixed.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    mixed.to_json(str(path), lines=True, force_ascii=False)
    elapsed, cpu = time.perf_counter() - t, cpu_s() - c
    return {"seconds": elapsed, "cpu": cpu, "rows": len(mixed), "base_mb": base, "peak_mb": peak_mb(), "file": str(path)}


def run_side(name: str, work: Path, args: dict) -> dict:
    cmd = [sys.executable, __file__, "--side", name, str(work), "--args", json.dumps(args)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{name} side failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--all-outputs", action="store_true")
    parser.add_argument("--side")
    parser.add_argument("work", nargs="?")
    parser.add_argument("--args", default="{}")
    ns = parser.parse_args()
    if ns.side:
        fn = side_engine if ns.side == "engine" else side_plain
        print(json.dumps(fn(Path(ns.work), json.loads(ns.args))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-data-mix-") as tmp:
        work = Path(tmp)
        paths = make_sources(work, ns.scale)
        recipe = {"recipe": 1, "kind": "eval", "name": "bench-data-mix", "model": {"source": "hub", "path": "org/model"},
                  "data": {"sources": {name: {"source": "jsonl", "path": str(p), "domain": SOURCES[name][0],
                                              "fields": {"answers": "answer"}} for name, p in paths.items()},
                           "mix": {"train_mixed": {"domains": PLAN_C, "size": ns.size, "seed": 42}}},
                  "evaluate": {"use": "evaluate", "data": "${data.train_mixed}", "scorer": "exact_match"}}
        (work / "recipe.yaml").write_text(json.dumps(recipe, indent=1))
        sys.path.insert(0, str(ROOT))
        from engine.data.mix import Unit, plan_mix
        from engine.recipe.models.data import Mix

        units = [Unit(name, SOURCES[name][0], sum(1 for _ in open(p))) for name, p in paths.items()]
        plans, _ = plan_mix(units, Mix.model_validate(recipe["data"]["mix"]["train_mixed"]), "train_mixed")
        (work / "counts.json").write_text(json.dumps({p.unit.source: p.rows for p in plans}))
        args = {"all_outputs": ns.all_outputs}
        best: dict[str, dict] = {}
        for _ in range(ns.repeats):   # interleaved, best of N: the least disturbed run of each side
            for side in ("plain", "engine"):
                for d in ("engine-cache", "plain-cache", "engine-out", "plain-out"):
                    subprocess.run(["rm", "-rf", str(work / d)], check=True)
                r = run_side(side, work, args)
                if side not in best or r["seconds"] < best[side]["seconds"]:
                    best[side] = {**r, "cpu": min(r["cpu"], best.get(side, r)["cpu"])}
                else:
                    best[side]["cpu"] = min(r["cpu"], best[side]["cpu"])
        e, p = best["engine"], best["plain"]
        assert e["rows"] == p["rows"] == ns.size, (e["rows"], p["rows"])
        print(f"rows: {ns.size} from {sum(u.available for u in units)} source rows "
              f"({', '.join(f'{u.source} {u.available}' for u in units)})")
        print(f"plain datasets: {p['seconds']:.2f} s ({p['cpu']:.2f} s CPU), memory growth "
              f"{p['peak_mb'] - p['base_mb']:.0f} MB (post-import RSS {p['base_mb']:.0f} MB)")
        print(f"engine:         {e['seconds']:.2f} s ({e['cpu']:.2f} s CPU), memory growth "
              f"{e['peak_mb'] - e['base_mb']:.0f} MB (post-import RSS {e['base_mb']:.0f} MB)"
              f"{' [all outputs]' if ns.all_outputs else ''}")
        ratio = e["seconds"] / p["seconds"]
        print(f"time ratio engine/plain: {ratio:.2f} wall, {e['cpu'] / p['cpu']:.2f} CPU (target <= 1.5) "
              f"{'OK' if ratio <= 1.5 else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
