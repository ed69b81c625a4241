"""Where the engine finds shipped files (recipes, templates, schemas) and keeps its cache and runs."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(kind: str) -> Path:
    """`recipes`, `templates` or `schemas`: inside the wheel (engine/_data/KIND) or the source checkout."""
    installed = _PACKAGE / "_data" / kind
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / kind


def cache_dir() -> Path:
    """The engine's cache (converted models, side environments, fingerprints, artifacts)."""
    root = os.environ.get("RECIPE_ENGINE_CACHE")
    path = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "recipe-engine"
    return path.expanduser()


def runs_root() -> Path:
    """Default root of run directories: $RECIPE_ENGINE_RUNS or ./runs."""
    return Path(os.environ.get("RECIPE_ENGINE_RUNS", "runs")).expanduser()
