"""The two executors of a compiled source pipeline (`engine.data.transforms.Pipeline`), giving the same records:

- `run_rows` on plain Python rows, as a lazy iterator: streaming hub sources, inline rows, and `engine.data.peek`
  (which must not import `datasets`, so nothing here imports it at module level);
- `run_dataset` on a `datasets.Dataset`: each `RowStep` (the head fused with the row-local transforms after it) is
  one batched `Dataset.map` with explicit features (`map_records`); dedupe / limit / sample are index selections.

Sampling keeps the n rows of smallest `sample_rank` in both, whatever the input order.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from typing import Any, Callable, Iterable, Iterator, Optional

from engine.data.adapters import COMMON_ORDER
from engine.data.encoding import compact_json, column, is_json_field, record_features, record_keys
from engine.data.sources import DataError
from engine.data.transforms import Dedupe, Limit, Pipeline, RowStep, Sample, ordered, sample_rank

BATCH = 1000


# ------------------------------------------------------------------------------------------ plain rows


def _hashable(values: tuple) -> Any:
    try:
        hash(values)
        return values
    except TypeError:
        return json.dumps(values, sort_keys=True, ensure_ascii=False, default=str)


def _dedupe_key(row: dict, step: Dedupe) -> Any:
    missing = [f for f in step.fields if f not in row]
    if missing:
        have = [k for k, v in row.items() if v is not None]
        raise DataError(f"{step.label}: the row has no field '{missing[0]}' (fields: {', '.join(have)})")
    return _hashable(tuple(row[f] for f in step.fields))


def run_rows(p: Pipeline, rows: Iterable[tuple[int, dict]], *, row_local_only: bool = False) -> Iterator[dict]:
    """Run the pipeline over (index, raw row) pairs in plain Python; yields records (with None-valued fields).

    With `row_local_only`, dedupe / limit / sample are skipped (peek: the first row after the row-local steps)."""
    it: Iterator[dict] = (ordered(r) for r in (p.apply_head(raw, i) for i, raw in rows) if r is not None)
    for step in p.steps:
        if isinstance(step, RowStep):
            it = _row_step(it, step, p)
        elif row_local_only:
            continue
        elif isinstance(step, Dedupe):
            it = _dedupe_rows(it, step, p)
        elif isinstance(step, Limit):
            it = _limit(it, step.n)
        elif isinstance(step, Sample):
            it = _sample_rows(it, step)
    return it


def _row_step(it: Iterator[dict], step: RowStep, p: Pipeline) -> Iterator[dict]:
    for row in it:
        out = p.apply_step(step, row)
        if out is not None:
            yield out


def _dedupe_rows(it: Iterator[dict], step: Dedupe, p: Pipeline) -> Iterator[dict]:
    seen: set = set()
    for row in it:
        try:
            key = _dedupe_key(row, step)
        except DataError as exc:
            raise p.fail(exc, (row.get("meta") or {}).get("index")) from None
        if key not in seen:
            seen.add(key)
            yield row


def _limit(it: Iterator[dict], n: int) -> Iterator[dict]:
    if n <= 0:
        return
    for i, row in enumerate(it):
        yield row
        if i + 1 >= n:
            return


def _sample_rows(it: Iterator[dict], step: Sample) -> Iterator[dict]:
    heap: list = []  # max-heap of the n smallest ranks: (-rank, -position, row)
    for pos, row in enumerate(it):
        item = (-sample_rank(step.seed, row["id"]), -pos, row)
        if len(heap) < step.n:
            heapq.heappush(heap, item)
        elif step.n and item[:2] > heap[0][:2]:
            heapq.heapreplace(heap, item)
    for _, _, row in sorted(heap, key=lambda x: -x[1]):
        yield row


# ------------------------------------------------------------------------------------------ datasets


def _batch_rows(batch: dict) -> Iterator[dict]:
    names = list(batch)
    for values in zip(*(batch[k] for k in names)):
        yield dict(zip(names, values))


def _discover(ds: Any, fn: Callable[[dict, int], Optional[dict]], indexed: bool) -> list[str]:
    """The fields `fn` produces, from the first batch that yields rows (datasets needs them up front)."""
    start = 0
    for batch in ds.iter(batch_size=256):
        outs = []
        for j, row in enumerate(_batch_rows(batch)):
            out = fn(row, start + j)
            if out is not None:
                outs.append(out)
        start += len(next(iter(batch.values()))) if batch else 0
        if outs:
            return record_keys(outs)
    return list(COMMON_ORDER)


def map_records(ds: Any, fn: Callable[[dict, int], Optional[dict]], *, fingerprint: str, label: str) -> Any:
    """`Dataset.map` of a row function (row, index) -> record | None, batched, into records with fixed features."""
    import pyarrow as pa

    keys = _discover(ds, fn, True)
    keyset = frozenset(keys)
    encoded = [(k, is_json_field(k)) for k in keys]
    features = record_features(keys)
    schema = features.arrow_schema
    types = [schema.field(k).type for k in keys]

    def batch_fn(batch: dict, indices: list[int]) -> Any:
        recs = []
        for i, row in zip(indices, _batch_rows(batch)):
            rec = fn(row, i)
            if rec is None:
                continue
            if not keyset.issuperset(rec):
                new = sorted(set(rec) - keyset)
                raise DataError(f"{label}: row {i} has field(s) {', '.join(new)} that earlier rows did not have; "
                                "every row of a source must have the same fields")
            recs.append(rec)
        arrays = []
        for (k, as_json), t in zip(encoded, types):
            values = [r.get(k) for r in recs]
            if as_json:
                try:
                    values = [None if v is None else compact_json(v) for v in values]
                except DataError as exc:
                    raise DataError(f"{label}: field '{k}': {exc}") from None
            arrays.append(pa.array(values, type=t))
        # an Arrow table with the final types: datasets then skips its own Python -> Arrow inference
        return pa.Table.from_arrays(arrays, schema=schema)

    return ds.map(batch_fn, batched=True, batch_size=BATCH, with_indices=True, remove_columns=ds.column_names,
                  features=features, keep_in_memory=True, load_from_cache_file=False,
                  new_fingerprint=fingerprint, desc=label)


def run_dataset(p: Pipeline, ds: Any, *, fingerprint: str) -> Any:
    """Run the pipeline over a `datasets.Dataset` of raw rows; returns a Dataset of records."""
    p.check_columns(ds.column_names)
    steps = list(p.steps)
    first = steps.pop(0) if steps and isinstance(steps[0], RowStep) else None

    def head(raw: dict, index: int) -> Optional[dict]:
        rec = p.apply_head(raw, index)
        # transforms see every common field (None where absent), as in `run_rows`
        return p.apply_step(first, ordered(rec)) if (first is not None and rec is not None) else rec

    ds = map_records(ds, head, fingerprint=_fp(fingerprint, 0), label=f"source '{p.name}'")
    for n, step in enumerate(steps, 1):
        if isinstance(step, RowStep):
            ds = map_records(ds, lambda row, i, s=step: p.apply_step(s, row), fingerprint=_fp(fingerprint, n),
                             label=f"source '{p.name}'")
        elif isinstance(step, Dedupe):
            ds = ds.select(_dedupe_indices(ds, step, p))
        elif isinstance(step, Limit):
            ds = ds.select(range(min(step.n, len(ds))))
        elif isinstance(step, Sample):
            ds = ds.select(sample_indices(column(ds, "id"), step.n, step.seed))
    return ds


def _fp(base: str, n: int) -> str:
    return hashlib.sha256(f"{base}:{n}".encode()).hexdigest()[:16]


def _dedupe_indices(ds: Any, step: Dedupe, p: Pipeline) -> list[int]:
    missing = [f for f in step.fields if f not in ds.column_names]
    if missing:
        raise p.fail(DataError(f"{step.label}: no field '{missing[0]}' (fields: {', '.join(ds.column_names)})"), None)
    columns = [column(ds, f) for f in step.fields]
    seen: set = set()
    keep = []
    for i, values in enumerate(zip(*columns)):
        key = _hashable(values)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return keep


def sample_indices(ids: list, n: int, seed: int) -> list[int]:
    """Positions of the n rows with the smallest `sample_rank` (all rows when n >= len), in input order."""
    if n >= len(ids):
        return list(range(len(ids)))
    ranked = heapq.nsmallest(n, ((sample_rank(seed, row_id), i) for i, row_id in enumerate(ids)))
    return sorted(i for _, i in ranked)
