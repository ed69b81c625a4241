"""The Axolotl side environment: a venv in `cache_dir()/envs/axolotl` with axolotl==0.19.0 and recipe-engine.

Axolotl pins transformers/TRL/peft versions that differ from the main environment's, so it gets its own venv;
recipe-engine is installed there too (so engine scorers work as Axolotl GRPO reward functions). Python 3.11
admits axolotl 0.19.0 at most. Building takes minutes and ~4 GB. `RECIPE_ENGINE_AXOLOTL_PYTHON` overrides the
interpreter used. `versions()` goes into the run lock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

from engine.paths import cache_dir
from engine.recipe.errors import EngineError

AXOLOTL_VERSION = "0.19.0"
ENV_VAR = "RECIPE_ENGINE_AXOLOTL_PYTHON"
RECORDED = ("axolotl", "transformers", "trl", "peft", "accelerate", "datasets", "torch", "recipe-engine")


def env_dir() -> Path:
    return cache_dir() / "envs" / "axolotl"


def python_path(directory: Optional[Path] = None) -> Path:
    return (directory or env_dir()) / "bin" / "python"


def locate() -> Path:
    """The side env's Python; a clear error saying how to build it when there is none."""
    override = os.environ.get(ENV_VAR)
    if override:
        if not Path(override).is_file():
            raise EngineError(f"{ENV_VAR}={override} is not a file; point it at the Axolotl environment's python")
        return Path(override)
    python = python_path()
    if not python.is_file():
        raise EngineError(f"backend axolotl needs its side environment, which is not built ({env_dir()}); run "
                          f"`recipe env create axolotl` (several minutes, ~4 GB), or set {ENV_VAR}")
    return python


def engine_source() -> str:
    """What to pip-install as recipe-engine in the side env: this checkout (editable) when running from one."""
    root = Path(__file__).resolve().parents[2]
    return f"-e{root}" if (root / "pyproject.toml").is_file() else "recipe-engine"


def create_commands(directory: Path, python: str = sys.executable) -> list[list[str]]:
    """The commands that build the env (a venv, then axolotl and recipe-engine in it)."""
    pip = [str(python_path(directory)), "-m", "pip", "install", "--disable-pip-version-check"]
    source = engine_source()
    return [
        [python, "-m", "venv", str(directory)],
        pip + ["--upgrade", "pip"],
        pip + [f"axolotl=={AXOLOTL_VERSION}"],
        pip + ["--no-deps", *([source[:2], source[2:]] if source.startswith("-e") else [source])],
        pip + ["pydantic>=2.7", "click>=8.1", "jinja2>=3.1", "ruamel.yaml>=0.18", "rich>=13.7", "httpx>=0.27"],
    ]


def create(*, force: bool = False, echo: Callable[[str], None] = print) -> Path:
    """Build the side env (or keep an existing one unless `force`); returns its Python."""
    directory = env_dir()
    if python_path(directory).is_file() and not force:
        echo(f"axolotl environment already exists: {directory} (use --force to rebuild)")
        return python_path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    for cmd in create_commands(directory):
        echo("$ " + " ".join(cmd))
        if subprocess.run(cmd).returncode:
            raise EngineError(f"building the axolotl environment failed at: {' '.join(cmd)}")
    (directory / "versions.json").write_text(json.dumps(versions(python_path(directory)), indent=2) + "\n")
    return python_path(directory)


def versions(python: Optional[Path] = None) -> dict[str, str]:
    """Versions of the packages that matter in the side env (for the lock)."""
    python = python or locate()
    script = ("import json; from importlib import metadata as m\nout={}\nfor n in %r:\n    try: out[n]=m.version(n)\n"
              "    except Exception: pass\nprint(json.dumps(out))") % (RECORDED,)
    out = subprocess.run([str(python), "-c", script], capture_output=True, text=True)
    if out.returncode:
        raise EngineError(f"cannot read versions from {python}: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
