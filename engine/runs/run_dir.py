"""The run directory: one per `recipe run`, holding everything needed to follow, resume and reproduce it.

    runs/<name>/<YYYYmmdd-HHMMSS>-<hash8>[-N]/
        recipe.yaml     the recipe as written          resolved.yaml   after includes, profiles, overrides
        plan.json       the compiled plan              run.json        name, hash, created, engine, command
        state.json      step progress (atomic)         events.jsonl    what happened, when
        lock.json       versions and fingerprints      metrics.json    merged metrics of all steps
        steps/<step_id>/  per-step rendered artefacts, outputs and logs

Every file is written atomically. `state.json` is written last on creation, so a directory without it
is not (yet) a run directory.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Sequence

from engine import __version__
from engine.recipe.errors import EngineError
from engine.runs.atomic import atomic_write_json, atomic_write_text, read_json
from engine.runs.events import EventLog, utc_now_iso
from engine.runs.state import RunState

RECIPE_FILE = "recipe.yaml"
RESOLVED_FILE = "resolved.yaml"
PLAN_FILE = "plan.json"
RUN_FILE = "run.json"
STATE_FILE = "state.json"
EVENTS_FILE = "events.jsonl"
LOCK_FILE = "lock.json"
METRICS_FILE = "metrics.json"
STEPS_DIR = "steps"

_SECRET_WORDS = re.compile(r"(?i)(key|token|secret|passw|auth|credential)")


def _check_component(value: str, what: str) -> None:
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
        raise EngineError(f"{what} {value!r} cannot be used as a directory name; use letters, digits, '-', '_' or '.'")


def _redacted_argv(argv: Sequence[str]) -> list[str]:
    """The command line with values of secret-looking options (`--set judge.api_key=...`, `--token X`) hidden."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        arg = str(arg)
        if hide_next and not arg.startswith("-"):
            out.append("***")
            hide_next = False
            continue
        hide_next = False
        name, eq, _ = arg.partition("=")
        if eq and _SECRET_WORDS.search(name):
            out.append(f"{name}=***")
        else:
            out.append(arg)
            hide_next = arg.startswith("-") and bool(_SECRET_WORDS.search(arg))
    return out


class RunDir:
    """An existing run directory; make one with `create`, reopen one with `open`."""

    def __init__(self, path: Path, state: RunState, events: EventLog, info: dict):
        self.path = path
        self.state = state
        self.events = events
        self.info = info  # run.json

    @classmethod
    def create(
        cls,
        *,
        root: Path,
        name: str,
        recipe_hash: str,
        recipe_text: str,
        recipe_filename: str,
        resolved_yaml: str,
        plan: dict,
        now: datetime | None = None,
        command: Sequence[str] | None = None,
        recipe_dir: Path | None = None,
        dir_name: str | None = None,
    ) -> "RunDir":
        """Make `root/<name>/<timestamp>-<hash8>/` (suffix -2, -3... when taken) and write the run's records.

        The timestamp is `now` as given (default: local time now); `command` defaults to `sys.argv`,
        with secret-looking option values hidden.
        """
        _check_component(name, "run name")
        short = recipe_hash[:8]
        _check_component(short, "recipe hash")
        moment = now or datetime.now().astimezone()
        parent = Path(root) / name
        parent.mkdir(parents=True, exist_ok=True)
        base = dir_name or f"{moment.strftime('%Y%m%d-%H%M%S')}-{short}"
        _check_component(base, "run directory name")
        path = parent / base
        n = 1
        while True:
            try:
                path.mkdir()
                break
            except FileExistsError:
                n += 1
                path = parent / f"{base}-{n}"
        info = {
            "name": name,
            "recipe_hash": recipe_hash,
            "recipe_source": Path(recipe_filename).name,
            "created": utc_now_iso(moment),
            "engine": __version__,
            "command": _redacted_argv(sys.argv if command is None else command),
            "recipe_dir": str(Path(recipe_dir or Path(recipe_filename).parent).resolve()),
        }
        atomic_write_text(path / RECIPE_FILE, recipe_text)
        atomic_write_text(path / RESOLVED_FILE, resolved_yaml)
        atomic_write_json(path / PLAN_FILE, plan)
        atomic_write_json(path / RUN_FILE, info)
        events = EventLog(path / EVENTS_FILE)
        events.emit("run_created", name=name, recipe_hash=recipe_hash, path=str(path))
        state = RunState.create(path / STATE_FILE)  # last: its presence marks a complete run directory
        return cls(path, state, events, info)

    @classmethod
    def open(cls, path: Path | str) -> "RunDir":
        """Reopen a run directory (for resume, status, report); EngineError when `path` is not one."""
        path = Path(path)
        if not path.is_dir():
            raise EngineError(f"{path}: no such run directory; pass a path like runs/<name>/<timestamp>-<hash>/ (see `recipe runs`)")
        missing = [f for f in (STATE_FILE, PLAN_FILE) if not (path / f).is_file()]
        if missing:
            raise EngineError(
                f"{path}: not a run directory (no {' or '.join(missing)}); "
                "pass a path like runs/<name>/<timestamp>-<hash>/ (see `recipe runs`)"
            )
        info = read_json(path / RUN_FILE) if (path / RUN_FILE).is_file() else {}
        return cls(path, RunState.load(path / STATE_FILE), EventLog(path / EVENTS_FILE), info if isinstance(info, dict) else {})

    def step_dir(self, step_id: str) -> Path:
        """`<run>/steps/<step_id>`, created on demand; "epoch_1/train" -> steps/epoch_1/train."""
        parts = step_id.split("/")
        if not step_id or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
            raise ValueError(f"step id {step_id!r} is not a relative path of plain names")
        path = self.path.joinpath(STEPS_DIR, *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_lock(self, lock: dict) -> None:
        atomic_write_json(self.path / LOCK_FILE, lock)

    def lock(self) -> dict | None:
        """The lock written by `write_lock`, or None when the run has none yet."""
        return read_json(self.path / LOCK_FILE) if (self.path / LOCK_FILE).is_file() else None

    def plan(self) -> dict:
        return read_json(self.path / PLAN_FILE)

    def recipe_text(self) -> str:
        return (self.path / RECIPE_FILE).read_text(encoding="utf-8")

    def resolved_yaml(self) -> str:
        return (self.path / RESOLVED_FILE).read_text(encoding="utf-8")

    def metrics(self) -> dict:
        """Everything written by `write_metrics` so far ({} before the first)."""
        path = self.path / METRICS_FILE
        data = read_json(path) if path.is_file() else {}
        return data if isinstance(data, dict) else {}

    def write_metrics(self, metrics: dict) -> None:
        """Merge `metrics` into metrics.json (top-level keys replace earlier values) atomically."""
        merged = self.metrics()
        merged.update(metrics)
        atomic_write_json(self.path / METRICS_FILE, merged)


def _summary(path: Path) -> dict:
    """One row of `list_runs`; pieces that cannot be read show as None."""
    try:
        info = read_json(path / RUN_FILE)
        info = info if isinstance(info, dict) else {}
    except EngineError:
        info = {}
    try:
        status: str | None = RunState.load(path / STATE_FILE).run_status
    except EngineError:
        status = None
    metrics = None
    if (path / METRICS_FILE).is_file():
        try:
            metrics = read_json(path / METRICS_FILE)
        except EngineError:
            metrics = None
    created = info.get("created")
    if not isinstance(created, str):
        created = utc_now_iso(datetime.fromtimestamp((path / STATE_FILE).stat().st_mtime).astimezone())
    return {
        "name": info.get("name", path.parent.name),
        "path": path,
        "created": created,
        "status": status,
        "recipe_hash": info.get("recipe_hash"),
        "metrics": metrics,
    }


def list_runs(root: Path | str) -> list[dict]:
    """Every run directory under `root` (`root/<name>/<run>/`), newest first.

    Each row: name, path, created (ISO UTC), status (as `RunState.run_status`: a run whose process is
    gone reads "interrupted"), recipe_hash, metrics (None when the run wrote none).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    rows = [
        _summary(run)
        for name_dir in root.iterdir() if name_dir.is_dir()
        for run in name_dir.iterdir() if run.is_dir() and (run / STATE_FILE).is_file()
    ]
    return sorted(rows, key=lambda r: (r["created"], str(r["path"])), reverse=True)
