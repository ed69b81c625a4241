"""A quick look at data without `datasets` or pyarrow: the first row of a `data.*` output, for `recipe validate`.

`first_row(validated, "train")` reads local jsonl / json / csv files, inline rows and package files in plain Python,
runs the source's adapter and row-local transforms (rename, map, filter, tag) on rows until one comes out, and
returns it as written to JSONL (None values left out). For a split or mix output it is the first row of the first
source that feeds it. It returns None where that needs more than a cheap read: hub, parquet and saved-dataset
sources, sources with a `function` transform (validate does not run user code), and missing files. Malformed data
is a `DataError` with file:line. CSV values are read as text here (the build lets pandas infer numbers).
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Optional

from engine.data.sources import DataError

CHEAP = ("jsonl", "json", "csv", "inline", "package")
SCAN_LIMIT = 10_000  # raw rows read at most to find one the adapter and filters keep


def _domain(model: Any) -> Optional[str]:
    if model.domain:
        return model.domain
    if model.adapter:
        from engine.data.transforms import _adapter

        try:
            return _adapter(model.adapter)[1]
        except DataError:
            return None
    return None


def source_for(block: Any, name: str) -> Optional[str]:
    """The source whose rows stand for output `name`: itself, the split's source, or the mix's first source."""
    if name in block.sources:
        return name
    head, _, rest = name.partition(".")
    split_sources = (block.split.sources or list(block.sources)) if block.split else []
    if block.split and head in block.split.ratios:
        return rest if rest in block.sources else (split_sources[0] if split_sources else None)
    mix = block.mix.get(name)
    if mix is not None:
        candidates = split_sources if mix.from_ else list(block.sources)
        for source in candidates:
            if _domain(block.sources[source]) in mix.domains:
                return source
        return candidates[0] if candidates else None
    return None


def first_row(validated: Any, data_name: str, *, block: Any = None, block_path: tuple = ("data",)) -> Optional[dict]:
    """The first row of output `data_name` (with or without the `data.` prefix), or None (see the module doc)."""
    from engine.data.executors import run_rows
    from engine.data.sources import inline_rows, iter_file_rows, resolve
    from engine.data.transforms import compile_pipeline, output_row
    from engine.recipe.models.data import FunctionTransform

    block = block if block is not None else getattr(validated.recipe, "data", None)
    if block is None:
        return None
    source = source_for(block, data_name.removeprefix("data."))
    if source is None:
        return None
    model = block.sources[source]
    if model.source not in CHEAP or any(isinstance(t, FunctionTransform) for t in model.transforms):
        return None
    try:
        ref = resolve(source, model, validated.loaded.location, block_path + ("sources",))
    except DataError:
        return None  # a missing file or package: `recipe validate` reports files itself
    if model.source == "inline":
        rows = inline_rows(ref)
    elif ref.fmt in ("jsonl", "json", "csv"):
        rows = ((i, row) for i, (_, row) in enumerate(iter_file_rows(ref.path, ref.fmt)))
    else:
        return None
    pipeline = compile_pipeline(ref, recipe_seed=getattr(validated.recipe, "seed", 0))
    for row in run_rows(pipeline, islice(rows, SCAN_LIMIT), row_local_only=True):
        return output_row(row)
    return None


# ------------------------------------------------------------------------------------ preview statistics


def field_stats(rows: list[dict]) -> list[tuple[str, int, str, str]]:
    """(field, rows that have it, value types, mean / max length) for `recipe data preview`."""
    order: dict[str, None] = {}
    for row in rows:
        order.update(dict.fromkeys(row))
    out = []
    for name in order:
        values = [row[name] for row in rows if row.get(name) is not None]
        types = sorted({type(v).__name__ for v in values})
        sizes = [len(v) for v in values if isinstance(v, (str, list, dict))]
        size = f"{sum(sizes) / len(sizes):.0f} / {max(sizes)}" if sizes else ""
        out.append((name, len(values), ", ".join(types), size))
    return out


def histogram(values: list[int], bins: int = 10) -> list[tuple[int, int, int]]:
    """(low, high, count) buckets of equal width covering the values."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    width = max(1, -(-(hi - lo + 1) // bins))
    counts = [0] * (-(-(hi - lo + 1) // width))
    for v in values:
        counts[(v - lo) // width] += 1
    return [(lo + i * width, lo + (i + 1) * width - 1, c) for i, c in enumerate(counts)]
