"""Batch arithmetic of a train step: per-device batch × gradient accumulation × world size = global batch.

A recipe gives the per-device batch and at most one of the global batch and the gradient accumulation
steps; `plan_batch` derives the other and refuses numbers that do not divide, suggesting ones that do.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.recipe.errors import RecipeError, RecipeErrors


@dataclass(frozen=True)
class BatchPlan:
    """Resolved batch sizes; `global_batch == per_device * grad_accum * world_size`."""

    per_device: int
    grad_accum: int
    world_size: int
    global_batch: int


def plan_batch(
    *, per_device: int, global_batch: int | None, grad_accum: int | None, world_size: int, path: tuple = ()
) -> BatchPlan:
    """Derive gradient accumulation (or the global batch) from the step's batch settings and the world size.

    Neither `global_batch` nor `grad_accum` given: one accumulation step. Raises `RecipeErrors` at `path`
    when a number is not positive, when `global_batch` is not a multiple of `per_device * world_size`, or
    when both are given and disagree.
    """
    path = tuple(path)
    bad = [
        RecipeError(what=f"{name} is {value}", path=path, why=f"{name} must be a positive whole number", fix="use 1 or more")
        for name, value in (("per-device batch", per_device), ("world size", world_size),
                            ("global batch", global_batch), ("gradient accumulation", grad_accum))
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1)
    ]
    if bad:
        raise RecipeErrors(bad)
    per_step = per_device * world_size
    if global_batch is None:
        accum = grad_accum or 1
        return BatchPlan(per_device, accum, world_size, per_step * accum)
    if global_batch % per_step:
        raise RecipeErrors.one(
            what=f"global batch {global_batch} is not a multiple of per-device batch {per_device} × world size "
            f"{world_size} = {per_step}",
            path=path,
            why="gradient accumulation steps = global / (per-device × world size) must be a whole number",
            fix=_divisible_fix(per_device, global_batch, world_size),
        )
    accum = global_batch // per_step
    if grad_accum is not None and grad_accum != accum:
        raise RecipeErrors.one(
            what=f"gradient accumulation {grad_accum} disagrees with global batch {global_batch}",
            path=path,
            why=f"per-device batch {per_device} × gradient accumulation {grad_accum} × world size {world_size} = "
            f"{per_step * grad_accum}, and global / (per-device × world size) = {accum}",
            fix=f"give only one of the two: global batch {global_batch} (accumulation {accum}) or accumulation "
            f"{grad_accum} (global batch {per_step * grad_accum})",
        )
    return BatchPlan(per_device, accum, world_size, global_batch)


def _divisible_fix(per_device: int, global_batch: int, world_size: int) -> str:
    """Nearby global batches, per-device batches and world sizes that divide."""
    per_step = per_device * world_size
    below, above = (global_batch // per_step) * per_step, (global_batch // per_step + 1) * per_step
    options = [f"global batch {' or '.join(str(g) for g in (below, above) if g > 0)}"]
    if global_batch % world_size == 0:
        per_process = global_batch // world_size
        sizes = sorted(_divisors(per_process), key=lambda d: (abs(d - per_device), d))[:3]
        options.append(f"per-device batch {' or '.join(str(d) for d in sorted(sizes))}")
    if global_batch % per_device == 0:
        worlds = [w for w in _divisors(global_batch // per_device) if w != world_size]
        worlds = sorted(sorted(worlds, key=lambda w: (abs(w - world_size), w))[:4])
        if worlds:
            options.append(f"a world size of {' or '.join(map(str, worlds))} (GPUs or processes × nodes)")
    return "use " + ", or ".join(options)


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))
