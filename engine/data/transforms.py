"""The per-source pipeline: raw row -> (`fields` mapping) -> adapter -> common record -> transforms -> sample.

A source compiles to a `Pipeline`: a head (mapping, adapter, normalisation to the common record) and steps. Row-local
transforms (rename, map, filter, tag, function) are fused into one `RowStep`, a plain function row -> row | None
(None drops the row); dedupe, limit and sample see the whole source. `engine.data.executors` runs a pipeline, on
plain rows (`run_rows`) or a `datasets.Dataset` (`run_dataset`); nothing here imports `datasets`.

Sampling is bottom-k by a hash of (seed, row id) (`sample_rank`), so both executors keep the same rows.
Every failure is a `DataError` naming the source, the step, and where the row came from (`file:line`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from engine.data.adapters import COMMON_ORDER, TEXT_FIELDS, MissingField, content_id
from engine.data.sources import DataError, SourceRef, locator
from engine.recipe.errors import did_you_mean
from engine.recipe.models.data import (DedupeTransform, FilterTransform, FunctionTransform, LimitTransform,
                                       MapTransform, RenameTransform, SampleSpec, SampleTransform, TagTransform)

RowFn = Callable[[dict], Optional[dict]]


# ------------------------------------------------------------------------------------------ the record


def _text(name: str, value: Any) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and name == "context":
        return "\n\n".join(value)
    raise DataError(f"field '{name}' must be text, got {type(value).__name__} {_short(value)}")


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def coerce(row: dict) -> dict:
    """Common fields in their types: text fields str (numbers become text), `answers` a list of str."""
    for name in TEXT_FIELDS:
        value = row.get(name)
        if value is not None and type(value) is not str:
            row[name] = _text(name, value)
    answers = row.get("answers")
    if answers is not None and not (isinstance(answers, list) and all(isinstance(a, str) for a in answers)):
        if isinstance(answers, (str, int, float)):
            row["answers"] = [str(answers)]
        elif isinstance(answers, list) and all(isinstance(a, (str, int, float)) or a is None for a in answers):
            row["answers"] = [str(a) for a in answers if a is not None]
        else:
            raise DataError(f"field 'answers' must be a list of text, got {_short(answers)}")
    return row


def ordered(row: dict) -> dict:
    """Every common field (None where absent) in `COMMON_FIELDS` order, then the extra fields."""
    out = {k: row.get(k) for k in COMMON_ORDER}
    for k, v in row.items():
        if k not in out:
            out[k] = v
    return out


def output_row(row: dict) -> dict:
    """A record as written to JSONL and returned by peek: fields whose value is None are left out."""
    return {k: v for k, v in row.items() if v is not None}


# ------------------------------------------------------------------------------------------ steps


@dataclass
class RowStep:
    """Row-local transforms fused into one pass; each function returns the row or None (dropped)."""

    fns: list[tuple[str, RowFn]] = field(default_factory=list)

    def __call__(self, row: dict) -> Optional[dict]:
        for label, fn in self.fns:
            try:
                row = fn(row)
            except DataError as exc:
                raise DataError(f"{label}: {exc}") from None
            except MissingField as exc:
                raise DataError(f"{label}: {exc}" + (f"; {did_you_mean(exc.name, exc.have)}"
                                                      if did_you_mean(exc.name, exc.have) else "")) from None
            except Exception as exc:  # noqa: BLE001 - expressions and user functions: one clear error
                raise DataError(f"{label}: {getattr(exc, 'message', None) or exc}") from None
            if row is None:
                return None
        return ordered(coerce(row))


@dataclass
class Dedupe:
    fields: list[str]
    label: str


@dataclass
class Limit:
    n: int


@dataclass
class Sample:
    n: int
    seed: int
    label: str


def sample_rank(seed: int, row_id: Any) -> int:
    """The sampling key of a row: 64 bits of blake2b(seed, id). The n smallest are the sample."""
    digest = hashlib.blake2b(f"{seed}\0{row_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _rename(mapping: dict[str, str]) -> RowFn:
    def fn(row: dict) -> dict:
        for old, new in mapping.items():
            if old not in row:
                raise MissingField(old, [k for k, v in row.items() if v is not None])
            if row.get(new) is not None and new not in mapping and new != old:
                raise DataError(f"cannot rename '{old}' to '{new}': the row already has a field '{new}'")
        return {mapping.get(k, k): v for k, v in row.items() if not (k in mapping.values() and k not in mapping
                                                                      and row.get(k) is None)}
    return fn


def _map(mapping: dict[str, str]) -> RowFn:
    from engine.recipe.expressions import evaluate

    def fn(row: dict) -> dict:
        for name, expr in mapping.items():
            row[name] = evaluate(expr, row)
        return row
    return fn


def _filter(expr: str) -> RowFn:
    from engine.recipe.expressions import evaluate_bool

    return lambda row: row if evaluate_bool(expr, row) else None


def _tag(spec: Any) -> RowFn:
    from engine.data.taxonomy import tag_row

    grade = None if isinstance(spec, str) else spec.grade
    return lambda row: tag_row(row, grade)


def load_function(target: str, base_dir: Optional[Path] = None) -> Callable:
    """`module:function`, imported (with the recipe's directory on sys.path when the module is not found)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise DataError(f"function '{target}' must be written `module:function`")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        if base_dir is None:
            raise DataError(f"function '{target}': module '{module_name}' not found") from None
        sys.path.insert(0, str(base_dir))
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            raise DataError(f"function '{target}': module '{module_name}' not found "
                            f"(also looked in {base_dir})") from None
        finally:
            sys.path.remove(str(base_dir))
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise DataError(f"function '{target}': '{module_name}' has no function '{attr}'")
    return fn


def _function(target: str, base_dir: Optional[Path]) -> RowFn:
    fn = load_function(target, base_dir)

    def call(row: dict) -> Optional[dict]:
        out = fn(row)
        if out is not None and not isinstance(out, dict):
            raise DataError(f"returned {type(out).__name__}; a transform function returns the row (a dict) or None")
        return out
    return call


# ------------------------------------------------------------------------------------------ the pipeline


@dataclass
class Pipeline:
    """A compiled source: `head(raw, index)` gives the common record (or None), then `steps` run in order."""

    ref: SourceRef
    head: Callable[[dict, int], Optional[dict]]
    steps: list = field(default_factory=list)
    where: Callable[[int], str] = str
    field_sources: dict[str, str] = field(default_factory=dict)
    has_function: bool = False

    @property
    def name(self) -> str:
        return self.ref.name

    def fail(self, exc: BaseException, index: Optional[int], step: str = "") -> DataError:
        at = f"{self.where(index)}: " if index is not None else f"{self.ref.describe()}: "
        return DataError(f"{at}source '{self.name}'{', ' + step if step else ''}: {exc}")

    def apply_head(self, raw: dict, index: int) -> Optional[dict]:
        try:
            return self.head(raw, index)
        except DataError as exc:
            raise self.fail(exc, index) from None
        except MissingField as exc:
            adapter = self.ref.model.adapter
            hint = did_you_mean(exc.name, exc.have)
            raise self.fail(f"adapter '{adapter}': {exc}" + (f"; {hint}" if hint else "")
                            + f"; map the dataset's fields with `fields: {{{exc.name}: YOUR_FIELD}}` or use "
                            f"another adapter", index) from None
        except Exception as exc:  # noqa: BLE001 - an adapter failing on odd data: say where
            raise self.fail(f"adapter '{self.ref.model.adapter}': {type(exc).__name__}: {exc}", index) from None

    def apply_step(self, step: RowStep, row: dict) -> Optional[dict]:
        try:
            return step(row)
        except DataError as exc:
            index = (row.get("meta") or {}).get("index")
            raise self.fail(exc, index, "transforms") from None

    def check_columns(self, columns: list[str]) -> None:
        """`fields:` must name fields the source has."""
        for target, src in self.field_sources.items():
            if src not in columns:
                hint = did_you_mean(src, columns)
                raise DataError(f"source '{self.name}' ({self.ref.describe()}): `fields` maps '{target}' to '{src}', "
                                f"which the source does not have; its fields: {', '.join(columns) or 'none'}"
                                + (f"; {hint}" if hint else ""))


def _adapter(name: str) -> tuple[Callable, str, dict]:
    from engine.catalog import ADAPTERS
    from engine.registry import UnknownName

    try:
        fn = ADAPTERS.get(name)
    except UnknownName as exc:
        raise DataError(str(exc)) from None
    module = sys.modules.get(getattr(fn, "__module__", ""), None)
    declared = getattr(module, "ARGS", None)
    return fn, getattr(module, "DOMAIN", None), (dict(declared) if declared is not None else None)


def compile_pipeline(ref: SourceRef, *, recipe_seed: int = 0, base_dir: Optional[Path] = None) -> Pipeline:
    """Compile a resolved source into its pipeline (imports the adapter, checks `adapter_args`)."""
    m = ref.model
    adapt, default_domain, args = None, None, {}
    if m.adapter:
        adapt, default_domain, declared = _adapter(m.adapter)
        args = declared if declared is not None else {}
        unknown = [k for k in m.adapter_args if declared is not None and k not in declared]
        if unknown:
            hint = did_you_mean(unknown[0], declared)
            raise DataError(f"source '{ref.name}': adapter '{m.adapter}' has no option '{unknown[0]}' "
                            f"(its adapter_args: {', '.join(declared) or 'none'})" + (f"; {hint}" if hint else ""))
        args.update(m.adapter_args)
    fields = dict(m.fields)
    meta = ref.meta()
    dataset_name = m.adapter

    def head(raw: dict, index: int) -> Optional[dict]:
        row = raw
        if fields:
            row = dict(raw)
            for target, src in fields.items():
                if src not in raw:
                    have = list(raw)
                    hint = did_you_mean(src, have)
                    raise DataError(f"`fields` maps '{target}' to '{src}', which the row does not have "
                                    f"(fields: {', '.join(have)})" + (f"; {hint}" if hint else ""))
                if src != target:
                    row.pop(src, None)
            for target, src in fields.items():
                row[target] = raw[src]
        rec = adapt(row, index=index, args=args) if adapt else dict(row)
        if rec is None:
            return None
        rec = coerce(rec)
        if rec.get("id") in (None, ""):
            rec["id"] = content_id(ref.name, {k: v for k, v in rec.items() if k != "meta"})
        rec["source"] = ref.name
        if dataset_name or not rec.get("dataset"):
            rec["dataset"] = dataset_name
        rec["domain"] = m.domain or rec.get("domain") or default_domain
        rec["meta"] = {**meta, "index": index}
        return rec

    steps: list = []
    has_function = False
    for i, t in enumerate(m.transforms):
        label = f"transforms[{i}] ({next(iter(t.model_dump(by_alias=True, exclude_none=True)))})"
        row_fn: Optional[RowFn] = None
        if isinstance(t, RenameTransform):
            row_fn = _rename(t.rename)
        elif isinstance(t, MapTransform):
            row_fn = _map(t.map)
        elif isinstance(t, FilterTransform):
            row_fn = _filter(t.filter)
        elif isinstance(t, TagTransform):
            row_fn = _tag(t.tag)
        elif isinstance(t, FunctionTransform):
            row_fn, has_function = _function(t.function, base_dir), True
        elif isinstance(t, DedupeTransform):
            steps.append(Dedupe([t.dedupe] if isinstance(t.dedupe, str) else list(t.dedupe), label))
        elif isinstance(t, LimitTransform):
            steps.append(Limit(t.limit))
        elif isinstance(t, SampleTransform):
            spec = t.sample if isinstance(t.sample, SampleSpec) else SampleSpec(n=t.sample)
            steps.append(Sample(spec.n, spec.seed if spec.seed is not None else _seed(m, recipe_seed), label))
        if row_fn is not None:
            if steps and isinstance(steps[-1], RowStep):
                steps[-1].fns.append((label, row_fn))
            else:
                steps.append(RowStep([(label, row_fn)]))
    if m.sample is not None:
        steps.append(Sample(m.sample, _seed(m, recipe_seed), "sample"))
    return Pipeline(ref=ref, head=head, steps=steps, where=locator(ref),
                    field_sources=fields, has_function=has_function)


def _seed(m: Any, recipe_seed: int) -> int:
    return m.seed if m.seed is not None else recipe_seed
