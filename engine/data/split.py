"""Deterministic splits by a hash of `group_by`, and the train/test leakage check.

Each source is split on its own. Rows are grouped by the value of `group_by` (default `id`; e.g. `context` for SQuAD,
so questions on one paragraph stay together); a row without a value (GSM8K rows have no context) is a group of its
own, keyed by its id. Groups are ordered by blake2b(seed, value) and cut at the ratios,
counted in rows, with largest-remainder rounding: 164 HumanEval rows at 5:1 give 137 / 27, like the seed. The
assignment depends only on the seed and the set of rows, so it is the same whatever the input order; a row's
split can move only when rows are added or removed near a cut.

After splitting, `check_leakage` fails when two splits share a `group_by` value within a source, or when rows in
different splits have the same input (question, context, prompt) across all split sources: duplicates that would
let a model see a test question in training.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

from engine.data.sources import DataError
from engine.data.encoding import arrow_batches, column

INPUT_FIELDS = ("question", "context", "prompt")


def group_key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _rank(seed: int, key: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{key}".encode("utf-8"), digest_size=8).digest()


def split_targets(total: int, ratios: dict[str, float]) -> dict[str, int]:
    """Rows per split: `total` shared by the ratios with largest-remainder rounding (sums to `total`)."""
    weight = sum(ratios.values())
    raw = {name: total * w / weight for name, w in ratios.items()}
    counts = {name: int(r) for name, r in raw.items()}
    left = total - sum(counts.values())
    for name in sorted(raw, key=lambda n: (-(raw[n] - counts[n]), list(ratios).index(n)))[:left]:
        counts[name] += 1
    return counts


def split_positions(values: list, ratios: dict[str, float], seed: int,
                    fallback: Optional[list] = None) -> dict[str, list[int]]:
    """Split name -> sorted positions of `values` (one group_by value per row). A row without a value (None or
    empty) is a group of its own, keyed by its `fallback` value (the row id)."""
    groups: dict[str, list[int]] = {}
    for i, value in enumerate(values):
        if value is None or value == "" or value == []:
            value = ["\0id", fallback[i] if fallback is not None else i]
        groups.setdefault(group_key(value), []).append(i)
    order = sorted(groups, key=lambda k: (_rank(seed, k), k))
    targets = split_targets(len(values), ratios)
    names = list(ratios)
    bounds, acc = [], 0
    for name in names:
        acc += targets[name]
        bounds.append(acc)
    out: dict[str, list[int]] = {name: [] for name in names}
    done, j = 0, 0
    for key in order:
        members = groups[key]
        middle = done + len(members) / 2
        while j < len(names) - 1 and middle >= bounds[j]:
            j += 1
        out[names[j]].extend(members)
        done += len(members)
    return {name: sorted(pos) for name, pos in out.items()}


def split_dataset(ds: Any, ratios: dict[str, float], seed: int, group_by: str, source: str) -> dict[str, Any]:
    """Split name -> the source's rows in that split (input order kept)."""
    if group_by not in ds.column_names:
        present = [c for c in ds.column_names]
        from engine.recipe.errors import did_you_mean

        hint = did_you_mean(group_by, present)
        raise DataError(f"split: source '{source}' has no field '{group_by}' to group by (fields: "
                        f"{', '.join(present)})" + (f"; {hint}" if hint else ""))
    fallback = column(ds, "id") if group_by != "id" else None
    positions = split_positions(column(ds, group_by), ratios, seed, fallback)
    return {name: ds.select(pos) for name, pos in positions.items()}


def _input_digest(row: dict) -> bytes | None:
    parts = [row.get(f) for f in INPUT_FIELDS]
    if not any(isinstance(p, str) and p.strip() for p in parts):
        return None
    text = "\0".join(" ".join(p.split()) if isinstance(p, str) else "" for p in parts)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def check_leakage(parts: dict[str, dict[str, Any]], group_by: str) -> None:
    """`parts`: source -> split -> Dataset. Raise a DataError naming leaked rows (up to three)."""
    problems: list[str] = []
    for source, splits in parts.items():
        owner: dict[str, str] = {}
        for split, ds in splits.items():
            for value in column(ds, group_by):
                if value is None or value == "" or value == []:
                    continue  # a group of its own (see split_positions)
                key = group_key(value)
                if owner.setdefault(key, split) != split and len(problems) < 3:
                    problems.append(f"source '{source}': {group_by}={key[:60]!r} is in '{owner[key]}' and '{split}'")
    seen: dict[bytes, tuple[str, str, str]] = {}
    examples: list[str] = []
    leaked = 0
    for source, splits in parts.items():
        for split, ds in splits.items():
            cols = [c for c in (*INPUT_FIELDS, "id") if c in ds.column_names]
            for table in arrow_batches(ds, 20000, cols):
                batch = {c: table.column(c).to_pylist() for c in cols}
                for values in zip(*(batch[c] for c in cols)):
                    row = dict(zip(cols, values))
                    digest = _input_digest(row)
                    if digest is None:
                        continue
                    first = seen.setdefault(digest, (split, source, row.get("id")))
                    if first[0] != split:
                        leaked += 1
                        if len(examples) < 3:
                            examples.append(f"{source} id {row.get('id')!r} ({split}) has the same input as "
                                            f"{first[1]} id {first[2]!r} ({first[0]})")
    if problems or leaked:
        lines = problems + examples
        count = f"{leaked} row{'s' if leaked != 1 else ''} " if leaked else ""
        raise DataError(f"split: train/test leakage: {count}{'share an input across splits: ' if leaked else ''}"
                        + "; ".join(lines)
                        + f". Keep such rows together with `split.group_by` (a field equal for rows that belong "
                        f"together, e.g. context or question), or drop duplicates with a `dedupe: [question, context]` "
                        f"transform on the source")
