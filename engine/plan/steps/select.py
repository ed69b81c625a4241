"""The `select` step: keep the rows where a sandboxed expression holds (e.g. the judgment was wrong)."""

from __future__ import annotations

import random

from engine.plan.context import StepContext
from engine.plan.steps.rows import output_path, read_rows, write_rows
from engine.recipe.expressions import evaluate_bool


def run(ctx: StepContext) -> dict[str, dict]:
    rows = read_rows(ctx.param("rows"), f"{ctx.step_id}.rows")
    where = ctx.param("where")
    kept = [row for row in rows if evaluate_bool(where, row)]
    limit = ctx.param("limit")
    if limit and len(kept) > limit:
        seed = ctx.param("seed")
        rng = random.Random(ctx.seed if seed is None else seed)
        picked = sorted(rng.sample(range(len(kept)), limit))
        kept = [kept[i] for i in picked]
    ctx.emit("selected", kept=len(kept), of=len(rows), where=where)
    return {"rows": write_rows(output_path(ctx, "rows.jsonl"), kept)}
