"""The Axolotl side environment: a venv in `cache_dir()/envs/axolotl` with axolotl==0.19.0 and recipe-engine.

Axolotl pins transformers/TRL/peft versions that differ from the main environment's, so it gets its own venv;
recipe-engine is installed there too (so engine scorers work as Axolotl GRPO reward functions). Python 3.11
admits axolotl 0.19.0 at most. Building takes minutes and ~4 GB. `RECIPE_ENGINE_AXOLOTL_PYTHON` overrides the
interpreter used. `versions()` goes into the run lock.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional

from engine.envs import venv
from engine.recipe.errors import EngineError

AXOLOTL_VERSION = "0.19.0"
ENV_VAR = "RECIPE_ENGINE_AXOLOTL_PYTHON"
RECORDED = ("axolotl", "transformers", "trl", "peft", "accelerate", "datasets", "torch", "recipe-engine")


def env_dir() -> Path:
    return venv.env_dir("axolotl")


def locate() -> Path:
    """The side env's Python; a clear error saying how to build it when there is none."""
    override = os.environ.get(ENV_VAR)
    if override:
        if not Path(override).is_file():
            raise EngineError(f"{ENV_VAR}={override} is not a file; point it at the Axolotl environment's python")
        return Path(override)
    python = venv.python_path(env_dir())
    if not python.is_file():
        raise EngineError(f"backend axolotl needs its side environment, which is not built ({env_dir()}); run "
                          f"`recipe env create axolotl` (several minutes, ~4 GB), or set {ENV_VAR}")
    return python


def create_commands(directory: Path, python: str = sys.executable) -> list[list[str]]:
    """The commands that build the env (a venv, then axolotl and recipe-engine in it)."""
    return [*venv.venv_commands(directory, python),
            venv.pip_install(directory) + [f"axolotl=={AXOLOTL_VERSION}"],
            *venv.engine_commands(directory)]


def create(*, force: bool = False, echo: Callable[[str], None] = print) -> Path:
    """Build the side env (or keep an existing one unless `force`); returns its Python."""
    directory = env_dir()
    return venv.build("axolotl", directory, create_commands(directory), RECORDED, force=force, echo=echo)


def versions(python: Optional[Path] = None) -> dict[str, str]:
    """Versions of the packages that matter in the side env (for the lock)."""
    return venv.versions(python or locate(), RECORDED)
