"""`source: endpoint`: an HTTP model; it resolves to an Endpoint artifact, not to weights."""

from __future__ import annotations

from pathlib import Path


def resolve(source: dict, recipe_dir: Path) -> dict:
    return {"type": "Endpoint", "url": source["url"], "model": source.get("model"), "source": dict(source)}
