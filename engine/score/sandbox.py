"""A warm pool of sandbox workers that run untrusted Python programs (generated code and its tests).

Each worker is a small single-threaded Python process (engine/score/sandbox_worker.py, standard library only,
started with `-I` and a minimal environment) that forks one child per program and applies the limits; see that
module and docs/scorers.md ("Code execution sandbox") for what is enforced. Programs are spread over the workers
by a thread pool; `run` keeps the input order and never raises for a program: every failure is a result.

    results = shared_sandbox().run(programs, timeout=3.0, memory_mb=1024)
    # [{"status": "passed" | "failed" | "timeout" | "error", "reason": str | None, "seconds": float}, ...]
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from engine.recipe.errors import EngineError

WORKER = Path(__file__).with_name("sandbox_worker.py")
START_TIMEOUT = 60.0
REPLY_GRACE = 10.0  # seconds past a program's timeout before its worker is declared stuck and replaced
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _Worker:
    """One worker process and the line protocol to it."""

    def __init__(self, scratch: str):
        env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
        env.update({var: "1" for var in _THREAD_VARS})
        env.update(HOME=scratch, PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")
        config = json.dumps({"scratch": scratch})
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(WORKER), config], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, cwd=scratch, start_new_session=True, close_fds=True)
        self._buffer = b""
        self.layers: dict = {}

    def wait_ready(self) -> None:
        line = self._read_line(START_TIMEOUT)
        if line is None:
            self.kill()
            raise EngineError(f"the code sandbox worker did not start (exit status {self.proc.poll()}); "
                              f"try `python -I {WORKER} '{{\"scratch\": \"/tmp\"}}'` to see why")
        self.layers = json.loads(line).get("layers", {})

    def call(self, job: dict, deadline: float) -> dict | None:
        """Send one job and read its result; None when the worker broke or did not answer in time."""
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return None
        line = self._read_line(deadline)
        if line is None:
            return None
        try:
            return json.loads(line)
        except ValueError:
            return None

    def _read_line(self, timeout: float) -> bytes | None:
        fd = self.proc.stdout.fileno()
        end = _now() + timeout
        while b"\n" not in self._buffer:
            left = end - _now()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # the worker's loop ends at end of input
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


def _now() -> float:
    return time.monotonic()


class Sandbox:
    """A pool of `workers` warm sandbox workers (default: one per available CPU), started on first use."""

    def __init__(self, workers: int | None = None):
        self.workers = workers or default_workers()
        self._scratch: str | None = None
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: list[_Worker] = []
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.layers: dict = {}

    def start(self) -> "Sandbox":
        with self._lock:
            if self._executor is not None:
                return self
            self._scratch = tempfile.mkdtemp(prefix="recipe-sandbox-")
            os.chmod(self._scratch, 0o711)  # the programs' user (nobody, when run as root) must traverse it
            started = [_Worker(self._scratch) for _ in range(self.workers)]
            try:
                for worker in started:
                    worker.wait_ready()
            except EngineError:
                for worker in started:
                    worker.kill()
                raise
            for worker in started:
                self._idle.put(worker)
            self._all = started
            self.layers = started[0].layers
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox")
        return self

    def run(self, programs: Sequence[str], *, timeout: float = 3.0, memory_mb: int = 1024,
            python_guard: bool = True) -> list[dict]:
        """Run each program (in order of the results); a program passes when it runs to its end.

        `python_guard=False` leaves out the Python audit hook, so tests can check the kernel layers alone."""
        if not programs:
            return []
        self.start()
        assert self._executor is not None
        job = {"timeout": float(timeout), "memory_mb": int(memory_mb), "python_guard": bool(python_guard)}
        futures = [self._executor.submit(self._run_one, {**job, "program": program}) for program in programs]
        return [f.result() for f in futures]

    def _run_one(self, job: dict) -> dict:
        worker = self._idle.get()
        try:
            result = worker.call(job, job["timeout"] + REPLY_GRACE)
        except Exception:  # noqa: BLE001 - a broken worker is replaced below
            result = None
        if result is None:
            worker.kill()
            try:
                replacement = _Worker(self._scratch or tempfile.gettempdir())
                replacement.wait_ready()
                with self._lock:
                    self._all = [w for w in self._all if w is not worker] + [replacement]
                worker = replacement
            except EngineError:
                pass
            result = {"status": "error", "reason": "the sandbox worker failed or did not answer", "seconds": None}
        self._idle.put(worker)
        return result

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            for worker in self._all:
                worker.close()
            self._all = []
            self._idle = queue.SimpleQueue()
            if self._scratch:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


_SHARED: dict[int, Sandbox] = {}
_SHARED_LOCK = threading.Lock()


def shared_sandbox(workers: int | None = None) -> Sandbox:
    """The process-wide warm pool for a worker count (kept across calls, closed at exit)."""
    count = workers or default_workers()
    with _SHARED_LOCK:
        if count not in _SHARED:
            _SHARED[count] = Sandbox(count)
        return _SHARED[count]


@atexit.register
def _close_shared() -> None:
    for sandbox in list(_SHARED.values()):
        sandbox.close()
    _SHARED.clear()
