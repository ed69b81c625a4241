"""The step cache: a completed step is reused by any later run whose step has the same key.

key = hash(step spec + the fingerprints of its resolved inputs + the seed + the versions of the packages
that shape the result). The index lives in `cache_dir()/steps/KEY.json` and points at the outputs of the run
that computed them (run directories hold the files; the index holds manifests), so "skip collection" or
"skip download/process" across experiments is a cache hit, and deleting an old run simply makes it a miss.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional

from engine.data.fingerprints import canonical_json, fingerprint_text
from engine.paths import cache_dir
from engine.runs.atomic import atomic_write_json, read_json
from engine.runs.lock import package_versions

_VERSIONED = ("recipe-engine", "torch", "transformers", "trl", "peft", "datasets", "vllm", "math-verify")


@functools.lru_cache(maxsize=1)
def _package_versions() -> dict[str, str]:
    return package_versions(_VERSIONED)


def _fingerprint(value: Any) -> Any:
    """What identifies an input: an artifact's fingerprint (or its values), a plain value as itself."""
    if isinstance(value, dict) and "type" in value:
        if value.get("fingerprint"):
            return {"type": value["type"], "fingerprint": value["fingerprint"]}
        return {k: _fingerprint(v) for k, v in value.items() if k not in ("path",)}
    if isinstance(value, dict):
        return {k: _fingerprint(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fingerprint(v) for v in value]
    return value


def step_key(entry: dict, inputs: dict, *, seed: int, epoch: Optional[int], save_name: Optional[str]) -> str:
    """The cache key of one step execution."""
    spec = {k: entry.get(k) for k in ("use", "params", "outputs", "launch")}
    uses_epoch = "epoch" in str(entry.get("when")) or "${epoch}" in str(entry.get("inputs"))
    return fingerprint_text(canonical_json({
        "spec": spec,
        "inputs": _fingerprint(inputs),
        "seed": seed,
        "epoch": epoch if uses_epoch else None,
        "save": save_name,
        "versions": _package_versions(),
    }))[:32]


def _index(key: str) -> Path:
    return cache_dir() / "steps" / f"{key}.json"


def _paths(value: Any) -> list[str]:
    if isinstance(value, dict):
        out = [value["path"]] if isinstance(value.get("path"), str) else []
        for k, v in value.items():
            if k != "path":
                out.extend(_paths(v))
        return out
    if isinstance(value, list):
        return [p for v in value for p in _paths(v)]
    return []


def lookup(key: str) -> Optional[dict]:
    """The outputs of a completed step with this key, if its files still exist."""
    index = _index(key)
    if not index.is_file():
        return None
    try:
        record = read_json(index)
    except Exception:
        return None
    outputs = record.get("outputs")
    if not isinstance(outputs, dict) or not all(Path(p).exists() for p in _paths(outputs)):
        return None
    return record


def store(key: str, outputs: dict, *, run_dir: Path, step_id: str) -> None:
    """Remember a completed step (after its outputs are durable)."""
    atomic_write_json(_index(key), {"key": key, "outputs": outputs, "run_dir": str(run_dir), "step": step_id})
