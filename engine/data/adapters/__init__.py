"""Dataset adapters: one module per dataset, each turning a row of the dataset's own schema into the common record.

An adapter module defines

    DOMAIN = "math"                          # the rows' domain unless the recipe sets `domain:`
    ARGS = {"answerable_only": False}        # the `adapter_args` it accepts, with their defaults
    def adapt(row: dict, *, index: int, args: dict) -> dict | None

`adapt` sees one raw row (`index` is its position in the source) and returns a record (build it with
`record(...)`), or None to drop the row. `args` holds ARGS with the recipe's `adapter_args` applied. A field
the row lacks is read with `need(row, "answer")`, which raises `MissingField`: the engine turns it into an
error naming the source, the file and line, and the fields the row has.

This package is imported by `recipe validate` (through `engine.data.peek`): keep it free of heavy imports.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Iterable

from engine.data.record import COMMON_FIELDS

COMMON_ORDER: tuple[str, ...] = tuple(COMMON_FIELDS)
TEXT_FIELDS = frozenset({"id", "source", "dataset", "domain", "question", "context", "solution", "prompt",
                         "response", "entry_point"})


class MissingField(KeyError):
    """A row lacks a field an adapter needs."""

    def __init__(self, name: str, have: Iterable[str]):
        self.name, self.have = name, sorted(str(k) for k in have)
        super().__init__(name)

    def __str__(self) -> str:
        return f"the row has no field '{self.name}' (fields: {', '.join(self.have) or 'none'})"


def need(row: dict, name: str) -> Any:
    """`row[name]`, or `MissingField` listing the fields the row has. A None value counts as missing: in Arrow
    data a field one row lacks is None there."""
    value = row.get(name)
    if value is None:
        raise MissingField(name, [k for k, v in row.items() if v is not None])
    return value


def content_id(prefix: str, *parts: Any) -> str:
    """A stable id from content, for datasets without ids: `gsm8k-1f3a...` (16 hex digits of a sha256)."""
    text = json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str)
    return f"{prefix}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}"


def record(**values: Any) -> dict:
    """A record with the common fields first (in `COMMON_FIELDS` order), then the dataset's extra fields."""
    out = {k: values.pop(k) for k in COMMON_ORDER if k in values}
    out.update(values)
    return out


def unique(items: Iterable[Any]) -> list[str]:
    """Non-empty strings of `items`, first occurrence kept, order kept."""
    seen: dict[str, None] = {}
    for item in items:
        if item is None:
            continue
        text = str(item).strip()
        if text and text not in seen:
            seen[text] = None
    return list(seen)


_SPACES = re.compile(r"[ \t]+")


def squash(text: str) -> str:
    """Collapse runs of spaces and tabs (not newlines) and strip."""
    return _SPACES.sub(" ", text).strip()
