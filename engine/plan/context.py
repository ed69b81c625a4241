"""What a step executor receives and returns.

A step type is one module that registers `run(ctx: StepContext) -> dict[str, dict]` in `engine.plan` (the STEPS
registry). It reads its compiled plan entry and resolved inputs from the context, writes everything under
`ctx.step_dir`, and returns its outputs as artifact dicts (below). The executor records completion only after
`run` returns, so outputs must be durable (written atomically) by then.

Artifacts are plain JSON dicts with a `type`:
    Dataset   {"type": "Dataset", "path": ".../rows.jsonl", "rows": N, "fingerprint": sha256}
    Samples   {"type": "Samples", "path": ".../samples.jsonl", "rows": N, "fingerprint": sha256}
    Model     {"type": "Model", "kind": "base" | "adapter" | "merged", "path": DIR, "base": <Model> (adapters),
               "source": {...model source block...}, "fingerprint": str}
    Metrics   {"type": "Metrics", "path": ".../metrics.json", "values": {...}}
    Endpoint  {"type": "Endpoint", "url": "http://127.0.0.1:PORT/v1", "model": NAME}
    Value     {"type": "Value", "value": ...}
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol


@dataclass
class StepContext:
    step_id: str                    # "train", "epoch_1/collect_train", "stage2/train"
    step_dir: Path                  # created; everything the step writes goes below it
    step: dict                      # the compiled plan entry: use, params, inputs, outputs, launch, save, ...
    inputs: dict[str, Any]          # field path -> resolved value (artifact dicts for references)
    plan: dict                      # the whole plan (seed, launch, tracking, data, model, ...)
    run_dir: Path
    recipe_dir: Path                # directory of the recipe file (relative paths in the recipe resolve here)
    seed: int
    epoch: Optional[int] = None
    save_name: Optional[str] = None  # the step's `save:` rendered for this epoch
    events: Any = None              # engine.runs.events.EventLog
    resources: dict[str, Any] = field(default_factory=dict)  # long-lived objects shared across steps (loaded generators)

    def emit(self, type_: str, **fields: Any) -> None:
        if self.events is not None:
            self.events.emit(type_, step=self.step_id, **fields)

    def param(self, name: str, default: Any = None) -> Any:
        """A step field: the resolved input when it was a reference, else the compiled parameter."""
        if name in self.inputs:
            return self.inputs[name]
        value = self.step.get("params", {}).get(name, default)
        nested = {k[len(name) + 1:]: v for k, v in self.inputs.items() if k.startswith(name + ".")}
        if nested and isinstance(value, dict):  # references inside a mapping (e.g. tasks.gsm8k.data), resolved
            value = copy.deepcopy(value)
            for dotted, resolved in nested.items():
                node, *parts = [value, *dotted.split(".")]
                for part in parts[:-1]:
                    node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
                if isinstance(node, list):
                    node[int(parts[-1])] = resolved
                else:
                    node[parts[-1]] = resolved
        return value


class StepExecutor(Protocol):
    def __call__(self, ctx: StepContext) -> dict[str, dict]: ...
