"""Turn a recipe's model block (or an upstream artifact) into a Model artifact: a local HF-format directory.

Each source is one module registered in `engine.models` (MODEL_SOURCES) with `resolve(source, recipe_dir)`:
`hub` (snapshot_download pinned by revision), `local` (a directory), `gguf` (converted once into the cache),
`run` (a model output of an earlier run), `tiny` (built locally and deterministically, cached by its
parameters). `endpoint` is not a weight directory: it resolves to an Endpoint artifact.

A Model artifact is `{"type": "Model", "kind": "base" | "adapter" | "merged", "path": DIR, "source": {...},
"fingerprint": str}`; an adapter also has `"base"`, the Model artifact it was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from engine.recipe.errors import EngineError

MODEL_KINDS = ("base", "adapter", "merged")


def model_artifact(path: Path | str, *, source: dict, fingerprint: str, kind: str = "base",
                   base: Optional[dict] = None, **extra: Any) -> dict:
    """A Model artifact dict (see the module docstring)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
    out: dict[str, Any] = {"type": "Model", "kind": kind, "path": str(Path(path).resolve()), "source": dict(source),
                           "fingerprint": fingerprint}
    if base is not None:
        out["base"] = base
    out.update(extra)
    return out


def resolve_model(source: dict, recipe_dir: Path | str) -> dict:
    """The Model (or Endpoint) artifact of a model block such as `{source: hub, path: Qwen/Qwen2.5-0.5B}`."""
    from engine.catalog import MODEL_SOURCES

    if not isinstance(source, dict) or "source" not in source:
        raise EngineError(f"a model is a mapping with `source:` (hub, local, gguf, run, tiny, endpoint), got {source!r}")
    resolver = MODEL_SOURCES.get(source["source"])
    return resolver(dict(source), Path(recipe_dir))


def as_model_artifact(value: Any, recipe_dir: Path | str) -> dict:
    """A step input that should be a model: an artifact as is, a model block resolved, anything else an error."""
    if isinstance(value, dict) and value.get("type") in ("Model", "Endpoint"):
        return value
    if isinstance(value, dict) and "source" in value:
        return resolve_model(value, recipe_dir)
    raise EngineError(f"expected a model (a Model artifact or a model block with `source:`), got {value!r}")


def base_of(artifact: dict) -> dict:
    """The plain model under an adapter (the artifact itself for base and merged models)."""
    while artifact.get("kind") == "adapter":
        artifact = artifact["base"]
    return artifact


def require_dir(path: Path, what: str, fix: str) -> Path:
    """`path` when it is a model directory (has config.json), else a clear EngineError."""
    if not path.is_dir():
        raise EngineError(f"{what}: {path} is not a directory; {fix}")
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise EngineError(f"{what}: {path} has no config.json (not a Hugging Face model directory); {fix}")
    return path
