"""How records are stored: Arrow features, JSON values, reading columns, and writing JSON Lines.

In Arrow (`datasets`) the common text fields are strings, `answers` a list of strings, and every other field a
`datasets.Json` column, so sources with different extra fields and value types concatenate. Values for Json columns
are encoded here (`to_json`): `datasets` would store a str that parses as JSON (`"1"`, `"true"`) as that JSON.

`write_jsonl` writes records as compact JSON Lines, None values left out, assembled column by column with Arrow
compute (Json columns are copied as the JSON text they hold). Columns and batches are read through Arrow with the
index mapping applied by one `take`: `ds[name]` and `ds.iter` format rows one by one and are many times slower.
`datasets` and pyarrow are imported inside functions only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from engine.data.adapters import COMMON_ORDER, TEXT_FIELDS
from engine.data.sources import DataError


def record_features(keys: Iterable[str]) -> Any:
    """`datasets.Features` of records with these fields: common text fields are strings, `answers` a list of
    strings, everything else (tests, label, meta, extras) JSON, so sources with different extras concatenate."""
    from datasets import Features, Json, List, Value

    def feature(key: str) -> Any:
        if key in TEXT_FIELDS:
            return Value("string")
        if key == "answers":
            return List(Value("string"))
        return Json()  # values are encoded with `to_json` first

    return Features({k: feature(k) for k in keys})


def _not_json(value: Any) -> Any:
    raise DataError(f"a value of type {type(value).__name__} cannot be stored: fields hold JSON values "
                    "(text, numbers, booleans, lists, mappings)")


from json.encoder import c_make_encoder, encode_basestring  # noqa: E402

# one C encoder for every value (`json.dumps` builds a new one per call); None where the C module is missing
_encoder = c_make_encoder(None, _not_json, encode_basestring, None, ":", ",", False, False, True) if c_make_encoder else None


def compact_json(value: Any) -> str:
    """Compact JSON (UTF-8 kept) of a value."""
    if type(value) is str:
        return encode_basestring(value)
    if _encoder is None:  # pragma: no cover
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_not_json)
    return "".join(_encoder(value, 0))


def is_json_field(key: str) -> bool:
    return key not in TEXT_FIELDS and key != "answers"


def to_json(value: Any) -> Optional[str]:
    """A value for a `Json` column, encoded here: `datasets` would store a str that parses as JSON (`"1"`,
    `"true"`) as that JSON and give back 1 / True."""
    return None if value is None else compact_json(value)


def record_keys(rows: Iterable[dict]) -> list[str]:
    keys = dict.fromkeys(COMMON_ORDER)
    for row in rows:
        keys.update(dict.fromkeys(row))
    return list(keys)


def arrow_batches(ds: Any, size: int, columns: Optional[list[str]] = None) -> Iterator[Any]:
    """A Dataset's rows as Arrow tables of `size` rows, an index mapping (select / shuffle) applied with one Arrow
    `take` per batch (`datasets` gathers row by row there, and formats rows as Python objects)."""
    table = ds.data.table
    if columns is not None:
        table = table.select(columns)
    indices = getattr(ds, "_indices", None)
    for start in range(0, len(ds), size):
        yield table.slice(start, size) if indices is None else table.take(indices.column(0).slice(start, size))


def column(ds: Any, name: str) -> list:
    """One column of a Dataset as Python values, read through Arrow (`ds[name]` formats row by row: ~50x slower)."""
    import pyarrow as pa

    values: list = []
    for table in arrow_batches(ds, 1 << 20, [name]):
        array = table.column(0).combine_chunks()
        if isinstance(array.type, pa.BaseExtensionType):  # Json: decode the JSON text
            values.extend(None if v is None else json.loads(v) for v in array.storage.to_pylist())
        else:
            values.extend(array.to_pylist())
    return values


def rows_to_dataset(rows: list[dict]) -> Any:
    from datasets import Dataset

    keys = record_keys(rows)
    columns = {}
    for k in keys:
        try:
            columns[k] = [to_json(r.get(k)) for r in rows] if is_json_field(k) else [r.get(k) for r in rows]
        except DataError as exc:
            raise DataError(f"field '{k}': {exc}") from None
    return Dataset.from_dict(columns, features=record_features(keys))


# ------------------------------------------------------------------------------------------ JSON Lines


def write_jsonl(ds: Any, path: Path) -> tuple[int, str]:
    """Write a Dataset of records as compact JSON Lines, None values left out; returns (rows, sha256).

    Lines are assembled column by column with Arrow: text is JSON-escaped by the json module's C escaper, lists of
    text are escaped flat and joined per row, `Json` columns already hold JSON text (encoded by `to_json`) and are
    copied as they are; nothing is decoded only to be encoded again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ds.column_names
    digest = hashlib.sha256()
    rows = 0
    with open(path, "wb") as f:
        for table in arrow_batches(ds, 5000):
            if not table.num_rows:
                continue
            data = _json_lines(table, names).encode("utf-8")
            f.write(data)
            digest.update(data)
            rows += table.num_rows
        f.flush()
        os.fsync(f.fileno())
    return rows, digest.hexdigest()


def _json_text(array: Any) -> Any:
    """JSON text of each value of an Arrow array (None stays null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array.type, pa.BaseExtensionType):      # Json: the storage is JSON text already
        return array.storage
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        if len(array) >= 64:  # few distinct values (source, domain, dataset): escape each once
            encoded = array.dictionary_encode()
            if len(encoded.dictionary) * 4 < len(array):
                return pc.take(_json_text(encoded.dictionary), encoded.indices)
        return pa.array([None if v is None else encode_basestring(v) for v in array.to_pylist()], pa.string())
    if pa.types.is_list(array.type) and pa.types.is_string(array.type.value_type):
        offsets = pc.subtract(array.offsets, array.offsets[0])
        items = _json_text(array.flatten())
        lists = pa.ListArray.from_arrays(offsets, items, mask=array.is_null())
        return pc.binary_join_element_wise("[", pc.binary_join(lists, ","), "]", "")
    return pa.array([None if v is None else compact_json(v) for v in array.to_pylist()], pa.string())


def _json_lines(table: Any, names: list[str]) -> str:
    """One JSON object per row of an Arrow table, each followed by a newline; null fields left out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    fragments = []
    for name in names:
        array = table.column(name).combine_chunks()
        if array.null_count == len(array):
            continue
        fragments.append(pc.binary_join_element_wise(json.dumps(name) + ":", _json_text(array), ""))
    if fragments:
        body = pc.binary_join_element_wise(*fragments, ",", null_handling="skip")
    else:
        body = pa.array([""] * table.num_rows, pa.string())
    lines = pc.binary_join_element_wise("{", body, "}\n", "")
    text = pc.binary_join(pa.ListArray.from_arrays([0, len(lines)], lines), "")[0].as_py()
    # characters str.splitlines() breaks at, which JSON leaves raw: escape them so any line reader works
    for char, escape in _LINE_BREAKS:
        if char in text:
            text = text.replace(char, escape)
    return text


_LINE_BREAKS = (("\x85", "\\u0085"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))
