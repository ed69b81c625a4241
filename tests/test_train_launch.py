"""Multi-process training on CPU: a 2-process torchrun SFT (DDP over gloo) and a 2-process DeepSpeed ZeRO-2 SFT.

Both run the plan's real argv (`torchrun ... -m engine.backends.train_entry STEP_DIR`) as subprocesses. The
DeepSpeed run needs the test-only accelerate patch (train_support.cpu_distributed_env), never the product.
"""

from __future__ import annotations

import json
import math

import pytest

from train_support import changed, cpu_distributed_env, train_context
from test_train_methods import QA_ROWS, QA_TEMPLATE, local, state_dict

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

ROWS = QA_ROWS * 2


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_sft(tmp_path, tiny_qwen2_dir):
    from engine.plan.steps.train import run

    before = state_dict(tiny_qwen2_dir)
    ctx = train_context(tmp_path, {"method": "sft", "template": QA_TEMPLATE, "max_steps": 2, "batch_size": 2,
                                   "global_batch_size": 8, "learning_rate": 5e-3, "logging_steps": 1},
                        local(tiny_qwen2_dir), ROWS, launch={"gpus": 0, "processes": 2, "master_port": _port()})
    assert ctx.step["launch"]["launcher"] == "torchrun"
    assert ctx.step["launch"]["batch"]["gradient_accumulation"] == 2
    out = run(ctx)
    result = json.loads((ctx.step_dir / "result.json").read_text())
    assert result["world_size"] == 2 and result["gradient_accumulation_steps"] == 2
    assert result["global_step"] == 2 and math.isfinite(result["metrics"]["train_loss"])
    assert changed(before, out["model"]["path"]) > 0
    launched = json.loads((ctx.step_dir / "launch.json").read_text())
    assert launched["argv"][0].endswith("torchrun") and str(ctx.step_dir) in launched["argv"]


@pytest.mark.slow
def test_deepspeed_zero2_two_processes_sft(tmp_path, tiny_qwen2_dir, monkeypatch):
    pytest.importorskip("deepspeed")
    from engine.plan.steps.train import run

    for key, value in cpu_distributed_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    before = state_dict(tiny_qwen2_dir)
    ctx = train_context(tmp_path, {"method": "sft", "template": QA_TEMPLATE, "max_steps": 2, "batch_size": 2,
                                   "learning_rate": 5e-3, "logging_steps": 1},
                        local(tiny_qwen2_dir), ROWS,
                        launch={"gpus": 0, "processes": 2, "master_port": _port(), "deepspeed": {"stage": 2}})
    assert ctx.step["launch"]["env"].get("DS_ACCELERATOR") == "cpu"
    out = run(ctx)
    ds = json.loads((ctx.step_dir / "ds_config.json").read_text())
    assert ds["zero_optimization"]["stage"] == 2 and ds["train_batch_size"] == 4
    result = json.loads((ctx.step_dir / "result.json").read_text())
    assert result["world_size"] == 2 and math.isfinite(result["metrics"]["train_loss"])
    assert changed(before, out["model"]["path"]) > 0
