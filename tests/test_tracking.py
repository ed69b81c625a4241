"""Tracking: tensorboard by default (event files under the train step: losses, and the resolved recipe and lock as
text); wandb (offline) and mlflow (file store in the run dir) when `tracking:` lists them, with the recipe and lock
as run config. The wandb / mlflow tests are skipped when the package is not installed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.main import cli

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning",
                                                            "ignore::DeprecationWarning")]

ROWS = [{"id": str(i), "question": f"What is {i} plus {i}?", "response": f"It is {2 * i}."} for i in range(8)]


def train_recipe(tmp_path: Path, model_dir: Path, tracking: dict | None) -> Path:
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    recipe = {
        "recipe": 1, "kind": "train", "name": "track", "model": {"source": "local", "path": str(model_dir)},
        "data": {"sources": {"train": {"source": "jsonl", "path": "train.jsonl"}}}, "launch": {"gpus": 0},
        "train": {"method": "sft", "data": "${data.train}", "max_steps": 2, "batch_size": 2, "learning_rate": 5e-3,
                  "logging_steps": 1,
                  "template": {"fields": ["question"], "messages": [{"role": "user", "content": "{{ question }}"}],
                               "target": "{{ response }}"}},
    }
    if tracking is not None:
        recipe["tracking"] = tracking
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe, indent=1))
    return path


def run_recipe(tmp_path: Path, recipe: Path) -> Path:
    result = CliRunner().invoke(cli, ["run", str(recipe), "--root", str(tmp_path / "runs"), "--no-cache"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs" / "track").iterdir()
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["type"] in ("tracking_warning", "report_failed")], events
    return run


def test_tensorboard_by_default(tmp_path, tiny_qwen2_dir, engine_cache):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = run_recipe(tmp_path, train_recipe(tmp_path, tiny_qwen2_dir, tracking=None))
    logdir = run / "steps" / "train" / "tensorboard"
    assert list(logdir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(logdir), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    losses = [s.value for s in events.Scalars("train/loss")]
    assert len(losses) == 2 and all(v > 0 for v in losses)

    def text(tag: str) -> str:
        return events.Tensors(f"{tag}/text_summary")[0].tensor_proto.string_val[0].decode()

    assert "name: track" in text("recipe/resolved.yaml")
    lock = json.loads("\n".join(line[4:] for line in text("recipe/lock.json").splitlines()))
    assert lock == json.loads((run / "lock.json").read_text())
    assert json.loads("\n".join(line[4:] for line in text("recipe/run.json").splitlines()))["step"] == "train"
    assert not (run / "wandb").exists() and not (run / "mlruns").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_offline_gets_recipe_and_lock(tmp_path, tiny_qwen2_dir, engine_cache, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = run_recipe(tmp_path, train_recipe(tmp_path, tiny_qwen2_dir, {"backends": ["wandb"], "project": "recipe-test"}))
    (record,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()  # wandb's offline transaction log: config updates are JSON inside protobuf records
    info = json.loads((run / "run.json").read_text())
    assert b"recipe_run" in data and f'"recipe_hash":"{info["recipe_hash"]}"'.encode() in data
    assert b'"lock"' in data and b'"packages"' in data and b"train/loss" in data
    assert not list((run / "steps" / "train").glob("tensorboard/events.*"))  # only the trackers asked for


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed")
def test_mlflow_file_store_gets_recipe_and_lock(tmp_path, tiny_qwen2_dir, engine_cache, monkeypatch):
    run = run_recipe(tmp_path, train_recipe(tmp_path, tiny_qwen2_dir, {"backends": ["mlflow"], "project": "recipe-test"}))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("recipe-test")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.data.params["recipe.name"] == "track" and found.data.params["recipe.train.max_steps"] == "2"
    info = json.loads((run / "run.json").read_text())
    assert found.data.tags["recipe.hash"] == info["recipe_hash"] and found.data.tags["recipe.step"] == "train"
    assert "loss" in found.data.metrics
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id, "recipe")}
    assert artifacts == {"recipe/resolved.yaml", "recipe/lock.json"}
    lock = json.loads(Path(client.download_artifacts(found.info.run_id, "recipe/lock.json", str(tmp_path))).read_text())
    assert lock == json.loads((run / "lock.json").read_text())
