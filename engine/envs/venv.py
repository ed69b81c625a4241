"""What the side environments share: a venv in `cache_dir()/envs/NAME`, recipe-engine installed in it, building it
command by command, and reading the versions of its packages (for the run lock and `versions.json`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Callable, Optional

from engine.paths import cache_dir
from engine.recipe.errors import EngineError

# recipe-engine goes into a side env without its dependencies (the env's own torch/transformers stay): these are
# the small pure-Python ones it needs there
ENGINE_DEPENDENCIES = ("pydantic>=2.7", "click>=8.1", "jinja2>=3.1", "ruamel.yaml>=0.18", "rich>=13.7", "httpx>=0.27")


def env_dir(name: str) -> Path:
    return cache_dir() / "envs" / name


def python_path(directory: Path) -> Path:
    return directory / "bin" / "python"


def pip_install(directory: Path) -> list[str]:
    """`pip install` with the env's Python (append the packages)."""
    return [str(python_path(directory)), "-m", "pip", "install", "--disable-pip-version-check"]


def engine_source() -> str:
    """What to pip-install as recipe-engine in the side env: this checkout (editable) when running from one."""
    root = Path(__file__).resolve().parents[2]
    return f"-e{root}" if (root / "pyproject.toml").is_file() else "recipe-engine"


def venv_commands(directory: Path, python: str) -> list[list[str]]:
    """The first commands of every build: the venv, then an up-to-date pip in it."""
    return [[python, "-m", "venv", str(directory)], pip_install(directory) + ["--upgrade", "pip"]]


def engine_commands(directory: Path) -> list[list[str]]:
    """The last commands of every build: recipe-engine without dependencies, then its small dependencies."""
    source = engine_source()
    pip = pip_install(directory)
    return [pip + ["--no-deps", *([source[:2], source[2:]] if source.startswith("-e") else [source])],
            pip + list(ENGINE_DEPENDENCIES)]


def build(name: str, directory: Path, commands: list[list[str]], recorded: tuple[str, ...], *, force: bool,
          echo: Callable[[str], None], may_fail: Callable[[list[str]], bool] = lambda cmd: False,
          check: Optional[Callable[[Path], None]] = None) -> Path:
    """Run `commands` to build the `name` env in `directory` (or keep an existing one unless `force`); returns its
    Python. A command fails the build unless `may_fail(cmd)`; `check(python)` then vets the env; the versions of
    the `recorded` packages go to `versions.json`."""
    python = python_path(directory)
    if python.is_file() and not force:
        echo(f"{name} environment already exists: {directory} (use --force to rebuild)")
        return python
    directory.parent.mkdir(parents=True, exist_ok=True)
    for cmd in commands:
        echo("$ " + " ".join(cmd))
        if subprocess.run(cmd).returncode and not may_fail(cmd):
            raise EngineError(f"building the {name} environment failed at: {' '.join(cmd)}")
    if check is not None:
        check(python)
    (directory / "versions.json").write_text(json.dumps(versions(python, recorded), indent=2) + "\n")
    return python


def versions(python: Path, recorded: tuple[str, ...]) -> dict[str, str]:
    """Versions of the `recorded` packages installed for `python` (those not installed left out)."""
    script = ("import json; from importlib import metadata as m\nout={}\nfor n in %r:\n    try: out[n]=m.version(n)\n"
              "    except Exception: pass\nprint(json.dumps(out))") % (recorded,)
    out = subprocess.run([str(python), "-c", script], capture_output=True, text=True)
    if out.returncode:
        raise EngineError(f"cannot read versions from {python}: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
