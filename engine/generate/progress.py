"""A progress bar for generation with throughput (prompts/s and generated tokens/s), drawn by rich on stderr.

Shown only when stderr is a terminal (never in logs, CI or tests) unless RECIPE_ENGINE_PROGRESS=1 forces it;
RECIPE_ENGINE_PROGRESS=0 hides it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Optional


def _wanted() -> bool:
    flag = os.environ.get("RECIPE_ENGINE_PROGRESS")
    if flag is not None:
        return flag.lower() not in ("0", "false", "no", "off")
    return sys.stderr.isatty()


class GenerationProgress:
    """`with GenerationProgress(total, "collect") as bar: bar.advance(prompts, tokens)`."""

    def __init__(self, total: int, description: str = "generate", enabled: Optional[bool] = None):
        self.total, self.description = total, description
        self.enabled = _wanted() if enabled is None else enabled
        self.done = self.tokens = 0
        self.started = time.perf_counter()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> "GenerationProgress":
        if self.enabled and self.total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                      console=Console(stderr=True), transient=False)
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, rate="")
        return self

    def advance(self, prompts: int = 1, tokens: int = 0) -> None:
        self.done += prompts
        self.tokens += tokens
        if self._progress is not None:
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            rate = f"{self.done / elapsed:.2f} prompts/s, {self.tokens / elapsed:.0f} tok/s"
            self._progress.update(self._task, advance=prompts, rate=rate)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
