"""Seed 003's judgment loop end to end with the real steps: `recipe run know_thyself/judgment -p smoke` for two
epochs with a tiny Qwen2 that knows half of the smoke questions (loop_support.trained_model).

Checked: the seed's files (responses.jsonl, val_responses.jsonl, tested_epoch0.jsonl, ..., epoch_1/) at the top
of the run directory; the summary table (summary.json / summary.md) against a recomputation from the per-row
files (answers re-scored with the official TriviaQA normalisation, judgments re-parsed, AUROC with scikit-learn);
the confusion matrix and ability distribution of every epoch; an epoch with nothing to train recorded and skipped.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path

import pytest

from loop_support import (events, read_jsonl, recipe, run_dir_of, smoke_judgment_args, state, taught_ids,
                          trained_model)  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

COLUMNS = ["Epoch", "Train Judg", "Train QA", "Train AUROC", "Val Judg", "Val QA", "Val AUROC"]
# full fine-tuning hard enough (3 passes, lr 2e-3) that the tiny model's judgments change between epochs
TRAIN = ["--set", "vars.lr=2.0e-3", "--set", "loop.steps.train.epochs=3"]


@pytest.fixture(scope="module")
def loop(trained_model, tmp_path_factory):  # noqa: F811
    cache, root = tmp_path_factory.mktemp("judgment_cache"), tmp_path_factory.mktemp("judgment_runs")
    proc = recipe("run", *smoke_judgment_args(trained_model), *TRAIN, "--root", root, cache=cache)
    return {"run": run_dir_of(proc.stdout), "cache": cache, "root": root, "model": trained_model}


# --- an independent recomputation of the seed's numbers from the per-row files ---------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation + "‘’´`")


def _norm(text: str) -> str:
    text = "".join(" " if ch in _PUNCT else ch for ch in str(text).replace("_", " ").lower())
    return " ".join(_ARTICLES.sub(" ", text).split()).strip()


def answer_correct(row: dict, answer: str) -> bool:
    """TriviaQA alias match: an alias occurs in the normalised answer as a whole-token span."""
    aliases = {a for a in (_norm(x) for x in [*row["answers"], *(row.get("normalized_aliases") or [])]) if a}
    padded = f" {_norm(answer)} "
    return any(f" {a} " in padded for a in aliases)


def ability(n_correct: int, n: int) -> str:
    return "can" if n_correct == n else "uncertain" if n_correct / n >= 0.5 else "cannot"


def parse(reply: str | None) -> str | None:
    text = " ".join(re.sub(r"[*_`\"“”#>]+", " ", (reply or "").lower()).split())
    for label in ("yes", "no"):
        if re.match(rf"\W*{label}\b", text):
            return label
    found = [label for label in ("yes", "no") if re.search(rf"\b{label}\b", text)]
    return found[0] if len(found) == 1 else None


def auroc(rows: list[dict]) -> float | None:
    from sklearn.metrics import roc_auc_score

    truth = [r["judgment_label"] == "yes" for r in rows]
    if len(set(truth)) < 2:
        return None
    return float(roc_auc_score(truth, [r["p_yes"] for r in rows]))


def recompute(responses: Path, tested: Path) -> dict:
    answered = read_jsonl(responses)
    verdicts = {r["id"]: [answer_correct(r, s) for s in r["samples"]] for r in answered}
    rows = read_jsonl(tested)
    assert [r["id"] for r in rows] == [r["id"] for r in answered]  # the same questions, in the same order
    for r in rows:  # the labels the judge was tested against follow from the answers
        v = verdicts[r["id"]]
        assert r["ability"] == ability(sum(v), len(v)), r["id"]
        assert r["judgment_label"] == ("yes" if r["ability"] == "can" else "no"), r["id"]
        assert len(r["predictions"]) == 1 and r["judgment"] == parse(r["predictions"][0]), r["id"]
    all_verdicts = [x for v in verdicts.values() for x in v]
    return {
        "judg": sum(r["judgment"] == r["judgment_label"] for r in rows) / len(rows),
        "qa": sum(all_verdicts) / len(all_verdicts),
        "auroc": auroc(rows),
        "confusion": [[sum(1 for r in rows if r["judgment_label"] == t and r["judgment"] == p) for p in ("yes", "no")]
                      for t in ("yes", "no")],
        "unparsed": {t: sum(1 for r in rows if r["judgment_label"] == t and r["judgment"] is None) for t in ("yes", "no")},
        "actual": Counter(r["ability"] for r in rows),
        "predicted": Counter({"yes": "can", "no": "cannot"}.get(r["judgment"], "other") for r in rows),
    }


def seed_file(run: Path, name: str) -> Path:
    path = run / name
    assert path.exists(), f"{name} is missing from the top of the run directory {run}"
    return path


def per_epoch_files(run: Path, epoch: int) -> dict[str, Path]:
    suffix = "" if epoch == 0 else f"_epoch{epoch}"
    return {"train_responses": seed_file(run, f"responses{suffix}.jsonl"),
            "val_responses": seed_file(run, f"val_responses{suffix}.jsonl"),
            "train_tested": seed_file(run, f"tested_epoch{epoch}.jsonl"),
            "val_tested": seed_file(run, f"val_tested_epoch{epoch}.jsonl")}


# --- tests -----------------------------------------------------------------------------------------------------


def test_fixture_model_knows_some_questions_and_not_others(loop):
    """Abilities vary at epoch 0 (at least two classes), and the taught questions are the ones it can answer."""
    rows = read_jsonl(seed_file(loop["run"], "tested_epoch0.jsonl")) + read_jsonl(seed_file(loop["run"], "val_tested_epoch0.jsonl"))
    classes = Counter(r["ability"] for r in rows)
    assert len(+classes) >= 2, classes
    taught = taught_ids()
    share = {known: sum(r["ability"] == "can" for r in rows if (r["id"] in taught) == known)
                    / sum((r["id"] in taught) == known for r in rows) for known in (True, False)}
    assert share[True] >= 0.5 > share[False], share  # it answers what it was taught


def test_seed_files_and_run_name(loop):
    run = loop["run"]
    assert re.fullmatch(r"tiny-trained_triviaqa_binary_lr0\.002_\d{8}_\d{6}", run.name), run.name
    for epoch in (0, 1, 2):
        for path in per_epoch_files(run, epoch).values():
            assert len(read_jsonl(path)) in (16, 8), path
    assert read_jsonl(run / "responses.jsonl")[0]["samples"].__len__() == 5
    for epoch in (1, 2):
        model = seed_file(run, f"epoch_{epoch}")
        assert (model / "config.json").is_file() and any(model.glob("*.safetensors")), model
    assert not (run / "epoch_0").exists() and not (run / "epoch_3").exists()
    st = state(run)
    assert st["status"] == "done"
    assert st["steps"]["epoch_0/train"]["status"] == "skipped" and st["steps"]["epoch_0/select"]["status"] == "skipped"


def test_summary_matches_the_per_row_files(loop):
    run = loop["run"]
    summary = json.loads(seed_file(run, "summary.json").read_text())
    assert [list(row) for row in summary] == [COLUMNS] * 3
    assert [row["Epoch"] for row in summary] == [0, 1, 2]
    for row in summary:
        files = per_epoch_files(run, row["Epoch"])
        train = recompute(files["train_responses"], files["train_tested"])
        val = recompute(files["val_responses"], files["val_tested"])
        expected = {"Train Judg": train["judg"], "Train QA": train["qa"], "Train AUROC": train["auroc"],
                    "Val Judg": val["judg"], "Val QA": val["qa"], "Val AUROC": val["auroc"]}
        for column, value in expected.items():
            if value is None:
                assert row[column] is None, (row["Epoch"], column, row[column])
            else:
                assert row[column] == pytest.approx(value, abs=1e-9), (row["Epoch"], column)
    assert any(row["Train AUROC"] is not None for row in summary)  # the recomputation compared real numbers
    assert len({row["Train QA"] for row in summary}) > 1  # training changed the model
    table = seed_file(run, "summary.md").read_text().splitlines()
    assert table[0] == "| " + " | ".join(COLUMNS) + " |" and len(table) == 2 + 3
    assert table[2].startswith(f"| 0 | {summary[0]['Train Judg']:.4f} | {summary[0]['Train QA']:.4f} |")


def test_confusion_matrix_and_ability_distribution_every_epoch(loop):
    run = loop["run"]
    for epoch in (0, 1, 2):
        files = per_epoch_files(run, epoch)
        for split in ("train", "val"):
            expected = recompute(files[f"{split}_responses"], files[f"{split}_tested"])
            metrics = json.loads((run / "steps" / f"epoch_{epoch}" / f"judge_{split}" / "metrics.json").read_text())
            confusion = metrics["confusion"]
            assert confusion["labels"] == ["yes", "no"]
            assert confusion["matrix"] == expected["confusion"], (epoch, split)
            assert confusion["unparsed"] == expected["unparsed"], (epoch, split)
            dist = metrics["ability_distribution"]
            assert {k: v for k, v in dist["actual"].items() if v} == dict(+expected["actual"]), (epoch, split)
            assert {k: v for k, v in dist["predicted"].items() if v} == dict(+expected["predicted"]), (epoch, split)
            label = json.loads((run / "steps" / f"epoch_{epoch}" / f"label_{split}" / "metrics.json").read_text())
            assert label["mode"] == "binary" and label["binary_map"] == {"can": "yes", "uncertain": "no", "cannot": "no"}
            assert sum(label["ability_distribution"].values()) == label["rows"]


def test_each_epoch_trains_on_the_wrong_judgments_of_the_previous_one(loop):
    run = loop["run"]
    for epoch in (1, 2):
        previous = read_jsonl(run / f"tested_epoch{epoch - 1}.jsonl")
        selected = read_jsonl(run / "steps" / f"epoch_{epoch}" / "select" / "rows.jsonl")
        assert [r["id"] for r in selected] == [r["id"] for r in previous if r["judgment"] != r["judgment_label"]]
        step = json.loads((run / "steps" / f"epoch_{epoch}" / "train" / "step.json").read_text())
        assert step["data"]["rows"] == len(selected)
        expected_base = str(loop["model"].resolve()) if epoch == 1 else str((run / "steps" / "epoch_1" / "train" / "epoch_1").resolve())
        assert step["model"]["path"] == expected_base  # epoch N trains from epoch N-1's weights


def test_epoch_with_nothing_to_train_is_recorded_and_skipped(loop):
    """Same recipe, nothing selected: epoch 0 comes from the cache, epoch 1 skips training and keeps the policy."""
    proc = recipe("run", *smoke_judgment_args(loop["model"]), *TRAIN, "--set", "loop.epochs=1",
                  "--set", "loop.steps.select.where=1 == 0", "--root", loop["root"], cache=loop["cache"])
    run = run_dir_of(proc.stdout)
    st = state(run)
    assert st["status"] == "done"
    assert st["steps"]["epoch_1/train"]["status"] == "skipped"
    assert st["steps"]["epoch_1/train"]["reason"] == "no rows to train on"
    log = events(run)
    assert {"step_skipped"} <= {e["type"] for e in log if e.get("step") == "epoch_1/train"}
    reused = {e["step"] for e in log if e["type"] == "step_reused"}
    assert {f"epoch_0/{s}" for s in ("collect_train", "label_train", "judge_train", "collect_val", "label_val", "judge_val")} <= reused
    assert not (run / "epoch_1").exists()
    collect = json.loads((run / "steps" / "epoch_1" / "collect_train" / "collect.json").read_text())
    assert collect["model"] == str(loop["model"].resolve())  # the policy carried over unchanged
    summary = json.loads((run / "summary.json").read_text())
    assert [r["Epoch"] for r in summary] == [0, 1] and summary[1]["Train QA"] is not None


def test_one_model_load_per_distinct_model_per_epoch(trained_model, tmp_path, monkeypatch):  # noqa: F811
    """The loop in this process with the loaders counted: an epoch loads the policy it generates with once for its
    four generation steps (collect and judge, train and val), and `train` loads the policy it starts from."""
    import torch
    from transformers import modeling_utils

    from engine.cli.main import cli
    from engine.plan import execute

    loads, current = [], {}
    original = modeling_utils.PreTrainedModel.from_pretrained.__func__
    monkeypatch.setattr(modeling_utils.PreTrainedModel, "from_pretrained", classmethod(
        lambda cls, path, *a, **k: loads.append((current.get("step"), str(path))) or original(cls, path, *a, **k)))
    step = execute.Executor._step

    def tracked(self, step_id, *args, **kwargs):
        current["step"] = step_id
        return step(self, step_id, *args, **kwargs)

    monkeypatch.setattr(execute.Executor, "_step", tracked)
    monkeypatch.setenv("RECIPE_ENGINE_CACHE", str(tmp_path / "cache"))  # nothing reused: every step runs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cli(["run", *smoke_judgment_args(trained_model), "--set", "loop.epochs=1", "--root", str(tmp_path / "runs")],
            prog_name="recipe", standalone_mode=False)
    finally:
        torch.set_num_threads(threads)
    by_epoch: dict[str, list] = {}
    for step_id, path in loads:
        by_epoch.setdefault(step_id.split("/")[0], []).append((step_id.split("/")[1], path))
    model = str(trained_model.resolve())
    assert by_epoch["epoch_0"] == [("collect_train", model)]
    assert [s for s, _ in by_epoch["epoch_1"]] == ["train", "collect_train"]
    assert by_epoch["epoch_1"][0][1] == model and by_epoch["epoch_1"][1][1].endswith("epoch_1/train/epoch_1")
