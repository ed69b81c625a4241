"""Stage selection of a pipeline run: `--only` / `--from` / `--skip`, and `--reuse RUN_DIR` for the outputs of the
stages not run (and of loop epochs before `loop.start_epoch`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from engine.recipe.errors import EngineError


class StageSelection:
    """`--only` / `--from` / `--skip` over a pipeline's stages; unselected stages' outputs come from `--reuse RUN_DIR`."""

    def __init__(self, only: tuple = (), from_: Optional[str] = None, skip: tuple = (), reuse: Optional[Path] = None):
        self.only, self.from_, self.skip, self.reuse = tuple(only), from_, tuple(skip), reuse
        self._reuse_state = None

    def check(self, plan: dict) -> None:
        names = list(plan["graph"].get("stages", {}))
        asked = [*self.only, *self.skip, *([self.from_] if self.from_ else [])]
        if asked and plan["graph"]["type"] != "pipeline":
            raise EngineError("--only / --from / --skip select stages of a pipeline recipe; this recipe is a " + plan["kind"])
        for n in asked:
            if n not in names:
                from engine.recipe.errors import choose_from

                raise EngineError(f"no stage '{n}'; {choose_from(n, names)}")
        if self.reuse is not None and not (self.reuse / "state.json").is_file():
            raise EngineError(f"--reuse {self.reuse}: not a run directory (no state.json)")
        if asked and self.reuse is None:
            self._check_inputs(plan["graph"])

    def _check_inputs(self, graph: dict) -> None:
        """Without --reuse, a selected stage must not need the outputs of a stage that does not run."""
        chosen = self.stages(graph["order"])
        for name in chosen:
            refs = re.findall(r"\$\{([^{}|]+)\}", json.dumps(graph["stages"][name]))  # no fallback alternatives
            for other in graph["order"]:
                if other not in chosen and any(r.strip().startswith(f"stages.{other}.") for r in refs):
                    raise EngineError(f"stage '{name}' uses the outputs of stage '{other}', which this selection does not "
                                      f"run; add --reuse RUN_DIR (an earlier run of this pipeline that has them) or "
                                      f"select '{other}' too")

    def stages(self, order: list[str]) -> list[str]:
        chosen = list(order)
        if self.from_:
            chosen = chosen[chosen.index(self.from_):]
        if self.only:
            chosen = [n for n in chosen if n in self.only]
        return [n for n in chosen if n not in self.skip]

    def reused_outputs(self, record: str) -> Optional[dict]:
        if self.reuse is None:
            return None
        if self._reuse_state is None:
            from engine.runs.state import RunState

            self._reuse_state = RunState.load(self.reuse / "state.json")
        return self._reuse_state.outputs(record) if self._reuse_state.is_done(record) else None
