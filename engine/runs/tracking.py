"""Tracking glue: the run's resolved recipe and lock logged as run config to the trackers a train step reports to.

Metrics go to the trackers through transformers' own integrations (`report_to`, rendered by the TRL backend from
the recipe's `tracking:` block; tensorboard by default, wandb / mlflow when listed; their directories and modes
come from `engine.backends.trl.tracking_env`: `steps/<step>/tensorboard/`, `<run>/wandb/` offline unless
`mode: online`, `<run>/mlruns/` unless `tracking_uri:`). What those integrations do not know is the recipe: the
callback made by `config_callback` runs after them at the start of training and adds

    tensorboard   text summaries `recipe/resolved.yaml`, `recipe/lock.json`, `recipe/run.json`
    wandb         config keys `recipe` (the resolved tree), `lock`, `recipe_run` (name, hash, run dir, step)
    mlflow        artifacts `recipe/resolved.yaml`, `recipe/lock.json`; params `recipe.<dotted path>`; tags
                  `recipe.name`, `recipe.hash`, `recipe.run_dir`, `recipe.step`, `git.commit`

At the end of training the wandb run is finished, so each train step (each loop epoch) is one tracker run, as
with mlflow. A train step outside a run directory (a library call) logs no recipe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

MLFLOW_PARAM_CHARS = 250  # mlflow limits param values; longer values are cut (the full tree is the artifact)
MLFLOW_PARAMS_PER_CALL = 100


def find_run_dir(path: Path | str) -> Optional[Path]:
    """The run directory holding `path` (a step directory), or None."""
    for candidate in [Path(path), *Path(path).parents]:
        if (candidate / "state.json").is_file() and (candidate / "resolved.yaml").is_file():
            return candidate
    return None


def run_config(run_dir: Path | str, step_id: Optional[str] = None) -> dict:
    """{"recipe": resolved tree, "recipe_text": resolved.yaml, "lock": lock.json, "run": name/hash/dir/step}."""
    from engine.recipe.yaml_io import load_yaml_file
    from engine.runs.atomic import read_json

    run_dir = Path(run_dir)
    tree, _ = load_yaml_file(run_dir / "resolved.yaml", what="a resolved recipe")
    lock = read_json(run_dir / "lock.json") if (run_dir / "lock.json").is_file() else {}
    info = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    return {
        "recipe": json.loads(json.dumps(tree, default=str)),
        "recipe_text": (run_dir / "resolved.yaml").read_text(encoding="utf-8"),
        "lock": lock,
        "run": {"name": info.get("name"), "recipe_hash": info.get("recipe_hash"), "run_dir": str(run_dir.resolve()),
                "step": step_id, "git_commit": ((lock.get("git") or {}).get("commit") if isinstance(lock, dict) else None)},
    }


def flat_params(tree: Any, prefix: str = "recipe") -> dict[str, str]:
    """Dotted paths of the leaves of a tree as mlflow params (strings, cut to MLFLOW_PARAM_CHARS)."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(flat_params(value, f"{prefix}.{key}"))
        return out
    text = tree if isinstance(tree, str) else json.dumps(tree, default=str)
    return {prefix: text[:MLFLOW_PARAM_CHARS]}


def log_tensorboard(writer: Any, config: dict) -> None:
    def block(text: str) -> str:  # tensorboard renders text as Markdown: an indented block keeps it verbatim
        return "\n".join("    " + line for line in text.splitlines())

    writer.add_text("recipe/resolved.yaml", block(config["recipe_text"]))
    writer.add_text("recipe/lock.json", block(json.dumps(config["lock"], indent=2, default=str)))
    writer.add_text("recipe/run.json", block(json.dumps(config["run"], indent=2)))
    writer.flush()


def log_wandb(run: Any, config: dict) -> None:
    run.config.update({"recipe": config["recipe"], "lock": config["lock"], "recipe_run": config["run"]},
                      allow_val_change=True)


def log_mlflow(mlflow: Any, config: dict) -> None:
    mlflow.log_text(config["recipe_text"], "recipe/resolved.yaml")
    mlflow.log_dict(config["lock"], "recipe/lock.json")
    tags = {"recipe.name": config["run"]["name"], "recipe.hash": config["run"]["recipe_hash"],
            "recipe.run_dir": config["run"]["run_dir"], "recipe.step": config["run"]["step"],
            "git.commit": config["run"]["git_commit"]}
    mlflow.set_tags({k: str(v) for k, v in tags.items() if v is not None})
    items = list(flat_params(config["recipe"]).items())
    for start in range(0, len(items), MLFLOW_PARAMS_PER_CALL):
        mlflow.log_params(dict(items[start:start + MLFLOW_PARAMS_PER_CALL]))


def config_callback(trainer: Any, step_dir: Path | str, step_id: Optional[str] = None, events_path: Optional[str] = None):
    """A TrainerCallback that logs the run config (see the module docstring) once the trackers have started.

    Add it after the trainer is built (callbacks run in order, the reporting integrations first). A tracker that
    fails to take the config gets a `tracking_warning` event; training goes on."""
    from transformers import TrainerCallback

    class RunConfigCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            run_dir = find_run_dir(step_dir)
            if run_dir is None:
                return
            config = run_config(run_dir, step_id)
            for callback in trainer.callback_handler.callbacks:
                name = type(callback).__name__
                try:
                    if name == "TensorBoardCallback" and getattr(callback, "tb_writer", None) is not None:
                        log_tensorboard(callback.tb_writer, config)
                    elif name == "WandbCallback" and getattr(callback, "_wandb", None) is not None and callback._wandb.run:
                        log_wandb(callback._wandb.run, config)
                    elif name == "MLflowCallback" and getattr(callback, "_ml_flow", None) is not None:
                        if callback._ml_flow.active_run() is not None:
                            log_mlflow(callback._ml_flow, config)
                except Exception as exc:  # noqa: BLE001  (tracking is a side channel: never fail training on it)
                    _warn(events_path, step_id, f"{name}: could not log the recipe and lock: {type(exc).__name__}: {exc}")

        def on_train_end(self, args, state, control, **kwargs):
            # one wandb run per train step (as mlflow's callback ends its run): the next step of a loop starts its own
            for callback in trainer.callback_handler.callbacks:
                if type(callback).__name__ == "WandbCallback" and getattr(callback, "_wandb", None) is not None:
                    try:
                        if callback._wandb.run is not None:
                            callback._wandb.finish()
                    except Exception as exc:  # noqa: BLE001
                        _warn(events_path, step_id, f"WandbCallback: could not finish the run: {type(exc).__name__}: {exc}")

    return RunConfigCallback()


def _warn(events_path: Optional[str], step_id: Optional[str], message: str) -> None:
    if events_path:
        from engine.runs.events import EventLog

        EventLog(events_path).emit("tracking_warning", step=step_id, message=message)
