"""Reading and writing the JSONL artifacts steps pass to each other (Dataset, Samples, Metrics)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from engine.data.fingerprints import sha256_file
from engine.recipe.errors import EngineError
from engine.runs.atomic import atomic_write_json, atomic_write_text, read_jsonl


def read_rows(artifact: Any, what: str) -> list[dict]:
    """The rows of a Dataset or Samples artifact."""
    if not isinstance(artifact, dict) or artifact.get("type") not in ("Dataset", "Samples") or "path" not in artifact:
        raise EngineError(f"{what}: expected a Dataset or Samples artifact with a path, got {str(artifact)[:120]}")
    return read_jsonl(artifact["path"])


def write_rows(path: Path, rows: Iterable[dict], type_: str = "Dataset") -> dict:
    """Write rows atomically as JSONL and return the artifact describing them."""
    rows = list(rows)
    text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return {"type": type_, "path": str(path), "rows": len(rows), "fingerprint": sha256_file(path)}


def write_metrics(path: Path, values: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, values)
    return {"type": "Metrics", "path": str(path), "values": values}


def output_path(ctx, default: str) -> Path:
    """The step's main output file: its rendered `save:` name, else `default`, inside the step directory."""
    return ctx.step_dir / (ctx.save_name or default)
