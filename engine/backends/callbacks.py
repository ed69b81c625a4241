"""Trainer callbacks the engine adds to every run: training metrics to the step log and the run's events,
checkpoints named and retained as the recipe says, and a rich progress bar on a terminal."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

from transformers import TrainerCallback

from engine.runs.atomic import append_jsonl


class MetricsCallback(TrainerCallback):
    """Every `on_log` record (loss, learning_rate, epoch, grad_norm, rewards...) of the main process goes to
    `train_log.jsonl` in the step dir and, when a run is recording, to its events.jsonl as `train_log` events."""

    def __init__(self, log_path: Path, events_path: Optional[str], step_id: str):
        self.log_path = Path(log_path)
        self.events_path = events_path
        self.step_id = step_id
        self.last: dict[str, Any] = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, **{k: _plain(v) for k, v in logs.items()}}
        self.last.update({k: v for k, v in record.items() if k not in ("step",)})
        append_jsonl(self.log_path, record)
        if self.events_path:
            from engine.runs.events import EventLog

            EventLog(self.events_path).emit("train_log", step=self.step_id, **{k: v for k, v in record.items() if k != "step"},
                                            global_step=state.global_step)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.item()
    except ImportError:
        pass
    return value


class CheckpointCallback(TrainerCallback):
    """Save the model (HF format, loadable on its own) every epoch or every N steps into `root/NAME`, NAME from the
    recipe's pattern (`checkpoint_epoch_{epoch}`, `checkpoint-{step}`); keep only the newest `retain`.

    `trainer.save_model` runs on every process (DeepSpeed ZeRO-3 gathers the weights) and writes on the main one.
    """

    def __init__(self, trainer: Any, root: Path, checkpoints: dict):
        self.trainer = trainer
        self.root = Path(root)
        self.every = checkpoints.get("every", "none")
        self.steps = checkpoints.get("steps")
        self.pattern = checkpoints.get("name") or "checkpoint-{step}"
        self.retain = checkpoints.get("retain")
        trainer.engine_checkpoints = []

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.every == "epoch":
            self._save(state)

    def on_step_end(self, args, state, control, **kwargs):
        if self.every == "steps" and self.steps and state.global_step % self.steps == 0:
            self._save(state)

    def _save(self, state) -> None:
        epoch = int(round(state.epoch or 0))
        name = self.pattern.format(epoch=epoch, step=state.global_step)
        path = self.root / name
        self.trainer.save_model(str(path))
        if not self.trainer.is_world_process_zero():
            return
        if self.trainer.processing_class is not None:
            self.trainer.processing_class.save_pretrained(str(path))
        saved = self.trainer.engine_checkpoints
        if name not in [c["name"] for c in saved]:
            saved.append({"name": name, "path": str(path), "epoch": epoch, "step": state.global_step})
        if self.retain:
            while len(saved) > self.retain:
                old = saved.pop(0)
                shutil.rmtree(old["path"], ignore_errors=True)


def use_rich_progress(trainer: Any) -> None:
    """On a terminal, swap transformers' tqdm bar for TRL's rich progress bar."""
    if not sys.stderr.isatty() or trainer.args.disable_tqdm:
        return
    try:
        from transformers.trainer_callback import ProgressCallback
        from trl import RichProgressCallback
    except ImportError:
        return
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(RichProgressCallback)
