"""Synthetic run directories for the report and compare tests: the files an executor writes (run.json, plan.json,
lock.json, state.json, events.jsonl, steps/...), made directly and fast, with known numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from engine.runs.lock import build_lock
from engine.runs.run_dir import RunDir


def make_run(tmp_path: Path, text: str, profiles: tuple = ()) -> tuple[RunDir, dict]:
    """A run directory and plan for recipe `text` (written to tmp_path/r.yaml), validated without file checks."""
    import textwrap

    from engine.plan.compile import compile_recipe
    from engine.recipe.loader import load_recipe
    from engine.recipe.validate import validate
    from engine.recipe.yaml_io import dump_yaml

    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(text))
    loaded = load_recipe(path, profiles=profiles)
    plan = compile_recipe(validate(loaded, check_files=False))
    run = RunDir.create(root=tmp_path / "runs", name=plan["name"], recipe_hash=plan["recipe_hash"], recipe_text=loaded.text,
                        recipe_filename=str(path), resolved_yaml=dump_yaml(loaded.tree), plan=plan)
    return run, plan


def create_run(root: Path, name: str, graph: dict, *, kind: str = "loop", tree: Optional[dict] = None) -> RunDir:
    plan = {"plan": 1, "name": name, "kind": kind, "recipe_hash": "abcd1234", "seed": 0, "graph": graph}
    tree = tree or {"recipe": 1, "kind": kind, "name": name}
    run = RunDir.create(root=root, name=name, recipe_hash="abcd1234", recipe_text=json.dumps(tree),
                        recipe_filename=f"{name}.yaml", resolved_yaml=json.dumps(tree), plan=plan)
    run.write_lock(build_lock(recipe_files=[], seeds={"run": 0}))
    return run


def done(run: RunDir, step_id: str, use: str, outputs: dict) -> None:
    run.state.mark_running(step_id)
    run.events.emit("step_started", step=step_id, use=use)
    run.state.mark_done(step_id, outputs)
    run.events.emit("step_done", step=step_id)


def train_outputs(run: RunDir, step_id: str, losses: list[float]) -> dict:
    step_dir = run.step_dir(step_id)
    with open(step_dir / "train_log.jsonl", "w", encoding="utf-8") as f:
        for i, loss in enumerate(losses, 1):
            f.write(json.dumps({"step": i, "loss": loss, "learning_rate": 1e-3 * (1 - i / (len(losses) + 1)), "epoch": i / len(losses)}) + "\n")
        f.write(json.dumps({"step": len(losses), "train_loss": sum(losses) / len(losses), "train_runtime": 1.5}) + "\n")
    values = {"train_loss": sum(losses) / len(losses), "train_runtime": 1.5, "global_step": len(losses)}
    (step_dir / "metrics.json").write_text(json.dumps(values))
    return {"model": {"type": "Model", "path": str(step_dir / "model")},
            "metrics": {"type": "Metrics", "path": str(step_dir / "metrics.json"), "values": values}}


def scored_evaluation(run: RunDir, step_id: str, correct: dict[str, dict[str, int]], *, model: str = "m") -> dict:
    """An evaluate step's Metrics artifact: per task {item id: 0/1} -> predictions.jsonl, metrics.json."""
    from engine.evaluate.metrics import summarize

    step_dir = run.step_dir(step_id)
    tasks, summary, rows = {}, {}, []
    for task, items in correct.items():
        values = list(items.values())
        acc = summarize(values, list(items), n_boot=200, seed=0)
        tasks[task] = {"scorers": {"exact": {"accuracy": acc, "rows": len(values)}}, "rows": len(values)}
        summary[f"{task}.exact.accuracy"] = summary[f"{task}.accuracy"] = acc["value"]
        rows += [{"task": task, "id": item, "item_values": {"accuracy": v}} for item, v in items.items()]
    total = [v for items in correct.values() for v in items.values()]
    summary["accuracy"] = sum(total) / len(total)
    values = {"tasks": tasks, "summary": summary, "accuracy": summary["accuracy"], "rows": len(total),
              "setup": {"model": model, "generator": "transformers", "templates": {t: "qa" for t in correct}}}
    (step_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (step_dir / "metrics.json").write_text(json.dumps(values))
    return {"metrics": {"type": "Metrics", "path": str(step_dir / "metrics.json"), "values": values,
                        "items": str(step_dir / "predictions.jsonl")},
            "rows": {"type": "Dataset", "path": str(step_dir / "predictions.jsonl"), "rows": len(rows)}}


def judgment_evaluation(run: RunDir, step_id: str, accuracy: float, auroc: float, matrix: list[list[int]]) -> dict:
    step_dir = run.step_dir(step_id)
    n = sum(map(sum, matrix))
    confusion = {"labels": ["yes", "no"], "matrix": matrix, "unparsed": {"yes": 1, "no": 0}, "unknown_truth": 0}
    task = {"judgment": {"accuracy": accuracy, "auroc": {"value": auroc, "n": n, "source": "logprobs"},
                         "confusion": confusion, "unparsed": 1, "rows": n},
            "accuracy_ci": {"mean": accuracy, "low": max(0.0, accuracy - 0.1), "high": min(1.0, accuracy + 0.1)}, "rows": n}
    values = {"tasks": {"data": task}, "summary": {"accuracy": accuracy, "judgment_accuracy": accuracy, "auroc": auroc},
              "accuracy": accuracy, "judgment_accuracy": accuracy, "auroc": auroc, "confusion": confusion, "rows": n,
              "setup": {"model": "m"}}
    (step_dir / "tested.jsonl").write_text("")
    return {"metrics": {"type": "Metrics", "path": str(step_dir / "metrics.json"), "values": values,
                        "items": str(step_dir / "tested.jsonl")}}


LOOP_GRAPH = {
    "type": "loop", "epochs": 2, "order": ["train", "label", "judge", "compare"], "carry": {},
    "steps": {"train": {"use": "train"}, "label": {"use": "label"}, "judge": {"use": "evaluate"}, "compare": {"use": "compare"}},
    "summary": {"columns": {"Judg": "${steps.judge.metrics.judgment_accuracy}", "QA": "${steps.label.metrics.qa_accuracy}",
                            "AUROC": "${steps.judge.metrics.auroc}"}},
}
EPOCHS = [  # (judgment accuracy, AUROC, QA accuracy, confusion)
    (0.50, 0.55, 0.30, [[3, 2], [3, 2]]),
    (0.65, 0.70, 0.35, [[4, 1], [2, 3]]),
    (0.80, 0.85, 0.40, [[5, 0], [1, 4]]),
]


def synthetic_loop_run(root: Path) -> Path:
    """A finished 2-epoch judgment loop (baseline epoch 0) with train logs, judgment evaluations, label metrics,
    a per-epoch summary.json and, in the last epoch, a comparison with flips."""
    run = create_run(root, "synthetic-loop", LOOP_GRAPH)
    run.state.set_run_status("running")
    run.events.emit("run_started")
    rows = []
    for epoch, (judg, auroc, qa, matrix) in enumerate(EPOCHS):
        if epoch == 0:
            run.state.mark_skipped("epoch_0/train", "baseline epoch")
        else:
            done(run, f"epoch_{epoch}/train", "train", train_outputs(run, f"epoch_{epoch}/train", [2.0 / epoch - 0.1 * i for i in range(6)]))
        done(run, f"epoch_{epoch}/label", "label", {"metrics": {"type": "Metrics", "path": "x", "values": {"qa_accuracy": qa, "rows": 10}}})
        done(run, f"epoch_{epoch}/judge", "evaluate", judgment_evaluation(run, f"epoch_{epoch}/judge", judg, auroc, matrix))
        rows.append({"Epoch": epoch, "Judg": judg, "QA": qa, "AUROC": auroc})
    before = scored_evaluation(run, "epoch_2/compare_a", {"math": {"q1": 1, "q2": 0, "q3": 0, "q4": 1}})["metrics"]
    after = scored_evaluation(run, "epoch_2/compare_b", {"math": {"q1": 0, "q2": 1, "q3": 1, "q4": 1}})["metrics"]
    from engine.evaluate.compare import compare

    comparison = compare(before, after, n_boot=200)
    (run.step_dir("epoch_2/compare") / "comparison.json").write_text(json.dumps(comparison))
    done(run, "epoch_2/compare", "compare", {"comparison": {"type": "Metrics", "path": "c", "values": comparison}})
    (run.path / "summary.json").write_text(json.dumps(rows))
    run.write_metrics({sid: {n: a["values"] for n, a in info["outputs"].items() if isinstance(a, dict) and a.get("type") == "Metrics"}
                       for sid, info in run.state.steps().items() if info["status"] == "done"})
    run.state.set_run_status("done")
    run.events.emit("run_done")
    return run.path
