"""`state.json`: which steps of a run are done, and with what outputs — the record `recipe resume` trusts.

    {"run": 1, "status": "created|running|done|failed|interrupted",
     "steps": {STEP_ID: {"status": "pending|running|done|failed|skipped", "started": ISO, "ended": ISO,
                         "outputs": {...}, "error": str|None, "attempts": int, "reason": str|None}},
     "owner": {"pid": int, "host": str, "token": str} | None,
     "updated": ISO}

Every mutation rewrites the file atomically, so after a crash it holds the last completed transition.
A step is marked done only after its outputs are durable, so "done" can be trusted on resume.

A run whose status is "running" but whose owning process is gone (killed, crashed, machine rebooted) was
interrupted: `run_status` reports it as "interrupted", and its steps found "running" report as
"interrupted" too. `first_incomplete` returns the first of them, which resume restarts.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Iterable

from engine.recipe.errors import EngineError
from engine.runs.atomic import atomic_write_json, read_json
from engine.runs.events import utc_now_iso

STATE_FORMAT = 1
RUN_STATUSES = ("created", "running", "done", "failed", "interrupted")
STEP_STATUSES = ("pending", "running", "done", "failed", "skipped")
COMPLETE = ("done", "skipped")

# Tells this process apart from an earlier one that had the same pid (common after a container restart).
_PROCESS_TOKEN = uuid.uuid4().hex


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "token": _PROCESS_TOKEN}


def _owner_alive(owner: dict | None) -> bool:
    """Whether the process recorded in `owner` may still be running this run (best effort, same host only)."""
    if not isinstance(owner, dict):
        return False
    if owner.get("token") == _PROCESS_TOKEN:
        return True
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


class RunState:
    """The progress of one run, persisted in `state.json` after every change."""

    def __init__(self, path: Path | str, data: dict):
        self.path = Path(path)
        self._data = data
        self._interrupted: set[str] = set()

    # -- creating and loading -------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path | str) -> "RunState":
        """A fresh state (status "created", no steps), written to `path`."""
        state = cls(path, {"run": STATE_FORMAT, "status": "created", "steps": {}, "owner": None, "updated": utc_now_iso()})
        state._save()
        return state

    @classmethod
    def load(cls, path: Path | str) -> "RunState":
        """Read `state.json`; steps left "running" by a process that is gone are reported as interrupted."""
        data = read_json(path)
        if not isinstance(data, dict) or data.get("run") != STATE_FORMAT or not isinstance(data.get("steps"), dict):
            raise EngineError(f"{path}: not a run state file (expected {{\"run\": {STATE_FORMAT}, \"steps\": {{...}}}})")
        state = cls(path, data)
        if not _owner_alive(data.get("owner")):
            state._interrupted = {sid for sid, step in data["steps"].items() if step.get("status") == "running"}
        return state

    # -- reading --------------------------------------------------------------------------------

    @property
    def run_status(self) -> str:
        """The run's status; "running" whose owner is gone reads as "interrupted"."""
        status = self._data["status"]
        if status == "running" and not _owner_alive(self._data.get("owner")):
            return "interrupted"
        return status

    @property
    def updated(self) -> str:
        return self._data["updated"]

    @property
    def interrupted_steps(self) -> list[str]:
        """Steps found "running" on load whose process is gone (resume restarts them)."""
        return [sid for sid in self._data["steps"] if sid in self._interrupted]

    def steps(self) -> dict[str, dict]:
        """A copy of every recorded step's entry, in the order steps were first recorded."""
        return {sid: dict(step) for sid, step in self._data["steps"].items()}

    def step(self, step_id: str) -> dict | None:
        """A copy of one step's entry, or None when it was never recorded."""
        step = self._data["steps"].get(step_id)
        return dict(step) if step is not None else None

    def status(self, step_id: str) -> str:
        """A step's status: one of STEP_STATUSES, or "interrupted" (see `interrupted_steps`)."""
        if step_id in self._interrupted:
            return "interrupted"
        step = self._data["steps"].get(step_id)
        return step["status"] if step else "pending"

    def is_done(self, step_id: str) -> bool:
        return self.status(step_id) == "done"

    def outputs(self, step_id: str) -> dict:
        """The outputs recorded when the step was marked done ({} otherwise)."""
        step = self._data["steps"].get(step_id)
        return dict(step.get("outputs") or {}) if step else {}

    def first_incomplete(self, ordered_ids: Iterable[str]) -> str | None:
        """The first step, in plan order, that is neither done nor skipped (None when all are)."""
        for step_id in ordered_ids:
            if self.status(step_id) not in COMPLETE:
                return step_id
        return None

    # -- changing (each call rewrites state.json) ----------------------------------------------

    def set_run_status(self, status: str) -> None:
        """Set the run's status; "running" also records this process as the run's owner."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; use one of {', '.join(RUN_STATUSES)}")
        self._data["status"] = status
        if status == "running":
            self._data["owner"] = _owner()
        self._save()

    def mark_running(self, step_id: str) -> None:
        """The step starts (again): its attempt count goes up, any earlier error and outputs are cleared."""
        step = self._entry(step_id)
        step.update(status="running", started=utc_now_iso(), ended=None, outputs={}, error=None, reason=None)
        step["attempts"] = int(step.get("attempts") or 0) + 1
        self._save()

    def mark_done(self, step_id: str, outputs: dict) -> None:
        """The step finished and its outputs are durable; `outputs` must be JSON-serialisable."""
        step = self._entry(step_id)
        now = utc_now_iso()
        step.update(status="done", ended=now, outputs=dict(outputs), error=None, reason=None)
        step["started"] = step.get("started") or now
        self._save()

    def mark_failed(self, step_id: str, error: str) -> None:
        step = self._entry(step_id)
        now = utc_now_iso()
        step.update(status="failed", ended=now, error=str(error))
        step["started"] = step.get("started") or now
        self._save()

    def mark_skipped(self, step_id: str, reason: str) -> None:
        """The step is not run (e.g. a gate failed, or reused from the artifact store); `reason` says why."""
        step = self._entry(step_id)
        step.update(status="skipped", ended=utc_now_iso(), error=None, reason=str(reason))
        self._save()

    # -- internals ------------------------------------------------------------------------------

    def _entry(self, step_id: str) -> dict:
        if not isinstance(step_id, str) or not step_id:
            raise ValueError(f"step id must be a non-empty string, got {step_id!r}")
        self._interrupted.discard(step_id)
        return self._data["steps"].setdefault(
            step_id,
            {"status": "pending", "started": None, "ended": None, "outputs": {}, "error": None, "attempts": 0, "reason": None},
        )

    def _save(self) -> None:
        self._data["updated"] = utc_now_iso()
        atomic_write_json(self.path, self._data)
