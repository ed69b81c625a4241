"""`source: local`: a Hugging Face-format model directory on disk (relative paths are relative to the recipe)."""

from __future__ import annotations

from pathlib import Path

from engine.data.fingerprints import fingerprint_path
from engine.models.resolve import model_artifact, require_dir


def local_path(path: str, recipe_dir: Path) -> Path:
    p = Path(path).expanduser()
    return (p if p.is_absolute() else Path(recipe_dir) / p).resolve()


def resolve(source: dict, recipe_dir: Path) -> dict:
    path = require_dir(local_path(source["path"], recipe_dir), f"model path {source['path']!r}",
                       "give a directory saved with save_pretrained (config.json, weights, tokenizer)")
    digest = fingerprint_path(path)["sha256"]
    return model_artifact(path, source=source, fingerprint=f"local:{digest}")
