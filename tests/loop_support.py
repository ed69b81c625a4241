"""Helpers for the loop tests (test_loop_*.py) and bench/loop_overhead.py.

`train_on_half(out_dir)` builds the tiny Qwen2 of the smoke profiles and teaches it HALF of the smoke TriviaQA pairs
(every other row of smoke_trivia.jsonl and smoke_trivia_val.jsonl), prompted exactly as collection prompts them
(`qa/closed_book` through the chat template), so the loop sees questions it can answer and questions it cannot —
a random model gets everything wrong and makes the judgment loop vacuous. A plain PyTorch loop (the model under
test is the loop, not this fixture): full fine-tuning, full batch, `STEPS` AdamW steps, seeded, CPU.

`trained_model` is a session fixture over it (import it into a test module: `from loop_support import
trained_model`); the model is built once per session under pytest's base temp dir and shared by the modules.

`recipe(*args)` runs the `recipe` CLI as a subprocess (the tests that kill it need a real process), with one torch
thread (a 100k-parameter model gains nothing from more, and on a busy 2-core machine two threads ran 16x slower);
`smoke_judgment_args(model_dir)` are the overrides that put the trained model into the shipped smoke profile.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE_DATA = REPO / "recipes" / "know_thyself" / "data"
STEPS = 150
LEARNING_RATE = 3e-3


def smoke_rows(name: str = "smoke_trivia.jsonl") -> list[dict]:
    """The smoke TriviaQA rows through the triviaqa adapter (the common record the steps see)."""
    from engine.data.adapters.triviaqa import adapt

    raw = [json.loads(line) for line in (SMOKE_DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [adapt(row, index=i, args={}) for i, row in enumerate(raw)]


def taught_ids() -> set[str]:
    """The question ids the fixture model is taught: every other row of the train and val smoke files."""
    return {r["id"] for name in ("smoke_trivia.jsonl", "smoke_trivia_val.jsonl") for r in smoke_rows(name)[::2]}


def train_on_half(out_dir: Path | str, *, steps: int = STEPS, seed: int = 0) -> Path:
    """Build the tiny Qwen2 and fine-tune it on half of the smoke QA pairs (see the module docstring)."""
    import torch

    out_dir = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 100k-parameter model: more threads only contend (16x slower on a busy 2-core box)
    try:
        return _train_on_half(out_dir, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _train_on_half(out_dir: Path, steps: int, seed: int) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.data.templates import load_template, render
    from engine.models.tiny import build_tiny

    base = build_tiny({"arch": "qwen2", "seed": 0}, out_dir.with_name(out_dir.name + ".base"))
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    template = load_template("qa/closed_book")
    ids = taught_ids()
    rows = [r for name in ("smoke_trivia.jsonl", "smoke_trivia_val.jsonl") for r in smoke_rows(name) if r["id"] in ids]
    examples = []
    for row in rows:
        prompt = tok.apply_chat_template(list(render(template, row, with_target=False).messages), tokenize=False,
                                         add_generation_prompt=True)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(row["answers"][0] + tok.eos_token, add_special_tokens=False)["input_ids"]
        examples.append((p, c))
    length = max(len(p) + len(c) for p, c in examples)
    input_ids = torch.full((len(examples), length), tok.pad_token_id)
    labels = torch.full((len(examples), length), -100)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for i, (p, c) in enumerate(examples):
        input_ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        labels[i, len(p): len(p) + len(c)] = torch.tensor(c)
        mask[i, : len(p) + len(c)] = 1
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "taught.json").write_text(json.dumps({"taught_ids": sorted(ids), "steps": steps, "final_loss": loss.item()}))
    os.replace(tmp, out_dir)
    return out_dir


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    target = tmp_path_factory.getbasetemp() / "loop_trained_qwen2"
    if not (target / "taught.json").is_file():
        train_on_half(target)
    return target


def smoke_judgment_args(model_dir: Path | str) -> list[str]:
    """`recipe run know_thyself/judgment` arguments: the shipped smoke profile with the trained fixture model."""
    return ["know_thyself/judgment", "-p", "smoke", "--set", f"model={{source: local, path: {model_dir}, name: tiny-trained}}"]


def recipe_env(cache: Optional[Path] = None, **extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if cache is not None:
        env["RECIPE_ENGINE_CACHE"] = str(cache)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is faster than two contending ones
    env.update(extra)
    return env


def recipe_argv(*args: Any) -> list[str]:
    return [sys.executable, "-m", "engine.cli", *[str(a) for a in args]]


def recipe(*args: Any, cache: Optional[Path] = None, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `recipe ARGS` in a subprocess; on failure the assertion shows its output's tail."""
    proc = subprocess.run(recipe_argv(*args), env=recipe_env(cache), capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"recipe {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def run_dir_of(output: str) -> Path:
    """The run directory a `recipe run` printed."""
    for line in output.splitlines():
        if line.startswith("run directory: "):
            return Path(line.split(": ", 1)[1].strip())
    raise AssertionError(f"no run directory in the output:\n{output[-2000:]}")


def events(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def state(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "state.json").read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def wait_for(condition, *, timeout: float, poll: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.endswith(b"\n"))
    except FileNotFoundError:
        return 0
