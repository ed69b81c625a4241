"""Sources: where a `data.sources.NAME` block's rows come from, read as they are (before the adapter).

Local files (jsonl / json / csv / parquet, `.gz` too), saved `datasets` directories and hub datasets are read with
`datasets` (Arrow, memory-mapped from its cache); inline rows and files inside an installed package are read the
same way. `iter_file_rows` reads a local file in plain Python, for `engine.data.peek` (which must not import
`datasets`) and to find the line of a malformed record when the fast reader fails.

Every problem is a `DataError` naming the file (and line, for JSON Lines), never a traceback. `datasets` is
imported inside functions only: importing this module is cheap.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from engine.paths import cache_dir, shipped_dir
from engine.recipe.errors import EngineError, Location
from engine.recipe.models.data import DiskSource, FileSource, HubSource, InlineSource, PackageSource

FORMATS = ("jsonl", "json", "csv", "parquet")
_SUFFIX_FORMAT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


class DataError(EngineError):
    """A problem with the data itself (malformed line, missing field, empty source, unsatisfiable mix)."""


def display(path: Path | str) -> str:
    """A path as errors show it: relative to the working directory when below it."""
    return str(Location(str(path)))


@dataclass
class SourceRef:
    """A source block resolved: its name, model, where the recipe wrote it, and the local file or directory."""

    name: str
    model: Any
    location: Optional[Location] = None
    path: Optional[Path] = None      # local file / package file / saved dataset directory
    fmt: Optional[str] = None        # jsonl | json | csv | parquet for files

    @property
    def kind(self) -> str:
        return self.model.source

    def describe(self) -> str:
        """`data/x.jsonl`, `hub dataset openai/gsm8k (main, train)`, `inline rows at recipe.yaml:12`."""
        m = self.model
        if isinstance(m, HubSource):
            detail = ", ".join(x for x in (m.name, m.split, m.revision and f"revision {m.revision}") if x)
            return f"hub dataset {m.path} ({detail})"
        if isinstance(m, InlineSource):
            return f"inline rows at {self.location}" if self.location else "inline rows"
        return display(self.path) if self.path else str(m.source)

    def meta(self) -> dict:
        """What the rows were read from, recorded in each row's `meta` and in info.json."""
        m = self.model
        if isinstance(m, HubSource):
            out = {"path": m.path, "name": m.name, "split": m.split, "revision": m.revision}
        elif isinstance(m, PackageSource):
            out = {"path": f"{m.package}/{m.file}"}
        elif isinstance(m, InlineSource):
            out = {"path": str(self.location.file) if self.location else "inline"}
        else:
            out = {"path": str(self.path)}
        return {k: v for k, v in out.items() if v is not None}


def _format_of(name: str) -> Optional[str]:
    suffixes = [s.lower() for s in Path(name).suffixes]
    while suffixes and suffixes[-1] in _COMPRESSED:
        suffixes.pop()
    return _SUFFIX_FORMAT.get(suffixes[-1]) if suffixes else None


def package_file(package: str, file: str) -> Path:
    """A data file inside an installed package, found with `importlib.util.find_spec` (the package is not imported)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        dist = package.split(".")[0].replace("_", "-")
        raise DataError(f"package '{package}' is not installed, so its file '{file}' cannot be read; "
                        f"install it (e.g. `pip install {dist}`) or point the source at a local copy of the file")
    roots = list(spec.submodule_search_locations or []) or ([str(Path(spec.origin).parent)] if spec.origin else [])
    for root in roots:
        candidate = Path(root) / file
        if candidate.is_file():
            return candidate
    where = roots[0] if roots else package
    raise DataError(f"package '{package}' (at {where}) has no file '{file}'")


def resolve(name: str, model: Any, locate: Callable[[tuple], Optional[Location]],
            block_path: tuple = ("data", "sources")) -> SourceRef:
    """Resolve a source block: local paths relative to the recipe file that wrote them, package files, formats."""
    from engine.recipe.checks import resolve_local

    path_key = block_path + (name, "path")
    ref = SourceRef(name=name, model=model, location=locate(block_path + (name,)))
    if isinstance(model, FileSource):
        text = model.path
        ref.path = shipped_dir("recipes") / text[4:] if text.startswith("pkg:") else resolve_local(text, locate(path_key))
        ref.fmt = model.source
    elif isinstance(model, DiskSource):
        ref.path = resolve_local(model.path, locate(path_key))
    elif isinstance(model, PackageSource):
        ref.path = package_file(model.package, model.file)
        ref.fmt = _format_of(model.file)
        if ref.fmt is None:
            raise DataError(f"source '{name}': cannot tell the format of '{model.file}' "
                            f"(name it .jsonl, .json, .csv or .parquet, optionally .gz)")
    if ref.path is not None and not ref.path.exists():
        raise DataError(f"source '{name}': {display(ref.path)} does not exist "
                        "(relative paths are relative to the recipe file)")
    return ref


# ------------------------------------------------------------------------------------ plain-Python reading


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_file_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict]]:
    """(line or row number, row) of a local jsonl / json / csv file, in plain Python; malformed data is a
    `DataError` with `file:line`. Parquet is not read here (it needs pyarrow)."""
    if fmt == "jsonl":
        with _open_text(path) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{display(path)}:{line_no}: not a valid JSON line ({exc.msg} at column {exc.colno})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{display(path)}:{line_no}: expected a JSON object, got {type(row).__name__}")
                yield line_no, row
    elif fmt == "json":
        with _open_text(path) as f:
            text = f.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            try:  # JSON Lines in a .json file (datasets reads those too)
                yield from iter_file_rows(path, "jsonl")
                return
            except DataError:
                pass
            raise DataError(f"{display(path)}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(data, list):
            raise DataError(f"{display(path)}: expected a JSON list of objects, got {type(data).__name__}")
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise DataError(f"{display(path)}: item {i} is not a JSON object ({type(row).__name__})")
            yield i + 1, row
    elif fmt == "csv":
        with _open_text(path) as f:
            reader = csv.DictReader(f)
            for row in reader:
                yield reader.line_num, dict(row)
    else:
        raise DataError(f"{display(path)}: {fmt} files are read with pyarrow, not here")


def record_line(path: Path, index: int) -> Optional[int]:
    """The line of the `index`-th record (0-based) of a JSON Lines file, or None."""
    try:
        for i, (line_no, _) in enumerate(iter_file_rows(path, "jsonl")):
            if i == index:
                return line_no
    except DataError:
        return None
    return None


def locator(ref: SourceRef) -> Callable[[int], str]:
    """index -> where that raw row is: `data/x.jsonl:17`, `recipe.yaml:12 (inline row 3)`, `hub dataset ... row 17`."""
    if ref.fmt == "jsonl" and ref.path is not None:
        return lambda i: f"{display(ref.path)}:{record_line(ref.path, i) or '?'}"
    if ref.fmt == "csv" and ref.path is not None:
        return lambda i: f"{display(ref.path)}: row {i + 1}"
    if isinstance(ref.model, InlineSource):
        return lambda i: f"{ref.location or 'inline'} (inline row {i})"
    return lambda i: f"{ref.describe()} row {i}"


# ------------------------------------------------------------------------------------ datasets reading


def _diagnose(ref: SourceRef, exc: BaseException) -> DataError:
    """Why `datasets` could not read a local file: the malformed line when plain Python finds one."""
    if ref.fmt in ("jsonl", "json"):
        try:
            for _ in iter_file_rows(ref.path, ref.fmt):
                pass
        except DataError as err:
            return err
    cause = exc.__cause__ or exc.__context__ or exc
    reason = (str(cause) or type(cause).__name__).splitlines()[0][:300]
    return DataError(f"{display(ref.path)}: cannot read it as {ref.fmt} ({reason})")


def _hub_error(ref: SourceRef, exc: BaseException) -> DataError:
    m = ref.model
    reason = (str(exc) or type(exc).__name__).strip().splitlines()[0][:300]
    args = ", ".join(repr(a) for a in (m.path, m.name) if a) + f", split={m.split!r}"
    return DataError(
        f"source '{ref.name}': cannot load {ref.describe()}: {reason}\n"
        f"  If the hub is unreachable (offline), use a local copy: where the hub is reachable run\n"
        f"    python -c \"import datasets; datasets.load_dataset({args}).save_to_disk('DIR')\"\n"
        f"  then point the recipe at it: data.sources.{ref.name}: {{source: disk, path: DIR"
        + (f", adapter: {m.adapter}" if m.adapter else "") + "}"
        f" (or source: parquet / jsonl with a file). A copy already in the Hugging Face cache is used offline "
        f"with HF_DATASETS_OFFLINE=1.")


def load_raw(ref: SourceRef) -> Any:
    """The source's rows as a `datasets.Dataset` (an `IterableDataset` for hub sources with `streaming: true`;
    None for inline rows, which the pipeline reads directly)."""
    import datasets

    m = ref.model
    if isinstance(m, InlineSource):
        return None
    if isinstance(m, HubSource):
        try:
            return datasets.load_dataset(m.path, m.name, split=m.split, revision=m.revision, streaming=m.streaming)
        except Exception as exc:  # noqa: BLE001 - network, auth, missing config, offline: one clear error
            raise _hub_error(ref, exc) from None
    if isinstance(m, DiskSource):
        try:
            ds = datasets.load_from_disk(str(ref.path))
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"source '{ref.name}': {display(ref.path)} is not a dataset saved with save_to_disk "
                            f"({str(exc).splitlines()[0][:200]})") from None
        if isinstance(ds, datasets.DatasetDict):
            if len(ds) != 1:
                raise DataError(f"source '{ref.name}': {display(ref.path)} holds the splits {', '.join(ds)}; "
                                f"point `path` at one of them, e.g. {display(ref.path / next(iter(ds)))}")
            ds = next(iter(ds.values()))
        return ds
    builder = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}[ref.fmt]
    try:
        return datasets.load_dataset(builder, data_files=str(ref.path), split="train",
                                     cache_dir=str(cache_dir() / "datasets"))
    except (StopIteration, ValueError) as exc:
        if ref.path.stat().st_size == 0 or "empty" in str(exc).lower() or isinstance(exc, StopIteration):
            raise DataError(f"source '{ref.name}': {display(ref.path)} is empty (no rows)") from None
        raise _diagnose(ref, exc) from None
    except Exception as exc:  # noqa: BLE001 - malformed data: find the line
        raise _diagnose(ref, exc) from None


def inline_rows(ref: SourceRef) -> Iterator[tuple[int, dict]]:
    for i, row in enumerate(ref.model.rows):
        yield i, dict(row)


# ------------------------------------------------------------------------------------ fingerprints


def _hub_commit(ds: Any) -> Optional[str]:
    """The dataset commit the files came from, when `datasets` recorded it (download URLs carry `@<sha>`)."""
    import re

    info = getattr(ds, "info", None)
    for url in (getattr(info, "download_checksums", None) or {}):
        found = re.search(r"@([0-9a-f]{40})", str(url))
        if found:
            return found.group(1)
    return None


def _package_version(package: str) -> Optional[str]:
    from importlib import metadata

    top = package.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def fingerprint(ref: SourceRef, raw: Any = None) -> dict:
    """What identifies the source's input: file sha256 (cached by inode/size/mtime), hub revision and dataset
    fingerprint, package version + file sha256, or a hash of inline rows. Recorded in the lock and info.json."""
    from engine.data.fingerprints import canonical_json, fingerprint_path, fingerprint_text

    m = ref.model
    if isinstance(m, HubSource):
        out = {"type": "hub", "path": m.path, "name": m.name, "split": m.split, "revision": m.revision}
        if raw is not None and hasattr(raw, "_fingerprint"):
            out["fingerprint"] = raw._fingerprint
            out["commit"] = _hub_commit(raw)
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(m, InlineSource):
        return {"type": "inline", "sha256": fingerprint_text(canonical_json(m.rows)), "rows": len(m.rows)}
    out = {**fingerprint_path(ref.path), "path": str(ref.path)}
    if isinstance(m, PackageSource):
        out.update(type="package", package=m.package, file=m.file, version=_package_version(m.package))
    return out
