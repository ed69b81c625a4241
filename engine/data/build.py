"""Materialise a recipe's `data:` block: every `data.*` output as a JSON Lines file of common records.

    outputs = build_data(validated, "data")       # DataOutputs: name -> (path, rows, sha256)
    outputs["train_mixed"].path, outputs["test.gsm8k"].rows

Layout of the output directory (seed 001's `data/`):

    sources/NAME.jsonl              data.NAME          each source after its adapter, transforms and sample
    SPLIT/SOURCE_SPLIT.jsonl        data.SPLIT.SOURCE  e.g. test/gsm8k_test.jsonl
    SPLIT/all.jsonl                 data.SPLIT         every split source's rows of that split
    SPLIT/SPLIT_index.json                             e.g. test/test_index.json: file, rows, domain per source
    mixed/MIX.jsonl (or `save:`)    data.MIX           e.g. mixed/train_mixed.jsonl
    mixed/info.json                                    sources, split counts, mixes (ratios, oversampling), fingerprints
    data.json                                          manifest: outputs, rows, sha256; written last

The build happens in a temporary sibling directory that replaces the output directory only when complete, so a
crash never leaves a half-written directory that looks complete. An existing directory is replaced only if it is
a previous build (it has data.json). Rows are written with keys in a stable order (common fields first) and
without None values.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from engine.data.sources import DataError, SourceRef, display
from engine.recipe.errors import choose_from

MANIFEST = "data.json"
Progress = Callable[[int, int, str], None]


@dataclass
class DataOutput:
    name: str
    path: Path
    rows: int
    sha256: str = ""

    @property
    def fingerprint(self) -> str:
        return self.sha256


@dataclass
class DataOutputs:
    """What `build_data` wrote: output name (without `data.`) -> file, rows, sha256; info.json's content; warnings."""

    dir: Path
    outputs: dict[str, DataOutput]
    info: dict
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> DataOutput:
        name = name.removeprefix("data.")
        if name not in self.outputs:
            raise DataError(f"no data output '{name}'; {choose_from(name, self.outputs)}")
        return self.outputs[name]

    def path(self, name: str) -> Path:
        return self[name].path


@dataclass
class Materialized:
    """The data block in memory: output name -> Dataset of records, their files, info, warnings."""

    datasets: dict[str, Any]
    files: dict[str, str]
    info: dict
    warnings: list[str]
    split_outputs: dict[str, list[str]] = field(default_factory=dict)   # split -> "SPLIT.SOURCE" names
    mix_files: dict[str, str] = field(default_factory=dict)


def output_files(block: Any) -> dict[str, str]:
    """Output name -> file path relative to the output directory."""
    files = {name: f"sources/{name}.jsonl" for name in block.sources}
    if block.split:
        for split in block.split.ratios:
            files[split] = f"{split}/all.jsonl"
            for source in block.split.sources or list(block.sources):
                files[f"{split}.{source}"] = f"{split}/{source}_{split}.jsonl"
    for name, mix in block.mix.items():
        files[name] = mix.save or f"mixed/{name}.jsonl"
    seen: dict[str, str] = {}
    for name, rel in files.items():
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts or not rel.endswith(".jsonl"):
            raise DataError(f"data.mix.{name}.save: '{rel}' must be a relative path ending in .jsonl inside the output directory")
        if rel in seen:
            raise DataError(f"data outputs '{seen[rel]}' and '{name}' would both be written to {rel}; give one a "
                            "different `save:`")
        seen[rel] = name
    return files


def _needed_sources(block: Any, names: list[str]) -> list[str]:
    split_sources = (block.split.sources or list(block.sources)) if block.split else []
    needed: set[str] = set()
    for name in names:
        head, _, rest = name.partition(".")
        if name in block.sources:
            needed.add(name)
        elif block.split and head in block.split.ratios:
            needed.update([rest] if rest else split_sources)
        elif name in block.mix:
            needed.update(split_sources if block.mix[name].from_ else block.sources)
    return [s for s in block.sources if s in needed]


def _with_progress(progress: Optional[Progress], total: int) -> Callable[[str], None]:
    state = {"done": 0}

    def step(label: str) -> None:
        if progress:
            progress(state["done"], total, label)
        state["done"] += 1
    return step


def _quiet_datasets() -> None:
    import datasets

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()


def load_source(ref: SourceRef, *, recipe_seed: int, base_dir: Optional[Path]) -> tuple[Any, dict]:
    """One source through its pipeline: (Dataset of records, its info for info.json)."""
    from engine.data.sources import fingerprint, inline_rows, load_raw
    from engine.data.encoding import rows_to_dataset
    from engine.data.executors import run_dataset, run_rows
    from engine.data.transforms import compile_pipeline
    from engine.data.fingerprints import short_hash

    import datasets

    pipeline = compile_pipeline(ref, recipe_seed=recipe_seed, base_dir=base_dir)
    raw = load_raw(ref)
    if raw is None:
        read = len(ref.model.rows)
        ds = rows_to_dataset(list(run_rows(pipeline, inline_rows(ref))))
    elif isinstance(raw, datasets.IterableDataset):
        read = None
        ds = rows_to_dataset(list(run_rows(pipeline, enumerate(raw))))
    else:
        read = len(raw)
        if read == 0:
            raise DataError(f"source '{ref.name}': {ref.describe()} is empty (no rows)")
        spec = short_hash({"source": ref.model.model_dump(mode="json", by_alias=True, warnings=False), "seed": recipe_seed})
        ds = run_dataset(pipeline, raw, fingerprint=f"{raw._fingerprint}-{spec}")
    if len(ds) == 0:
        raise DataError(f"source '{ref.name}' ({ref.describe()}): no rows left after the adapter and transforms"
                        + (f" ({read} rows read)" if read else "") + "; check `filter` and `adapter_args`")
    info = {"rows": len(ds), "read": read, "adapter": ref.model.adapter, "domain": _domains(ds),
            "from": ref.meta(), "fingerprint": fingerprint(ref, raw)}
    return ds, info


def _domains(ds: Any) -> Any:
    from engine.data.encoding import column

    counts: dict[str, int] = {}
    for d in column(ds, "domain"):
        counts[d or "none"] = counts.get(d or "none", 0) + 1
    return next(iter(counts)) if len(counts) == 1 else counts


def materialize(validated: Any, *, names: Optional[list[str]] = None, block: Any = None,
                block_path: tuple = ("data",), progress: Optional[Progress] = None) -> Materialized:
    """Load, split and mix the data block in memory (`names`: the outputs wanted; default all)."""
    from datasets import concatenate_datasets

    from engine.data.mix import build_mix
    from engine.data.sources import resolve
    from engine.data.split import check_leakage, split_dataset

    block = block if block is not None else validated.recipe.data
    if block is None:
        raise DataError("the recipe has no `data:` block")
    _quiet_datasets()
    all_names = block.output_names()
    names = list(all_names) if names is None else [n.removeprefix("data.") for n in names]
    for name in names:
        if name not in all_names:
            raise DataError(f"no data output '{name}'; {choose_from(name, all_names)}")
    files = output_files(block)
    if block.split and block.split.sources:
        for s in block.split.sources:
            if s not in block.sources:
                raise DataError(f"data.split.sources names '{s}', which is not a source; "
                                f"{choose_from(s, block.sources)}")
    for mix_name, mix in block.mix.items():
        if mix.from_ and (not block.split or mix.from_ not in block.split.ratios):
            splits = list(block.split.ratios) if block.split else []
            raise DataError(f"data.mix.{mix_name}.from: '{mix.from_}' is not a split"
                            + (f"; {choose_from(mix.from_, splits)}" if splits else " (the recipe has no `split:`)"))
    sources = _needed_sources(block, names)
    wanted_mixes = [m for m in block.mix if m in names]
    needs_split = (block.split is not None and any(n.partition(".")[0] in block.split.ratios for n in names)) \
        or any(block.mix[m].from_ for m in wanted_mixes)
    step = _with_progress(progress, len(sources) + (1 if needs_split else 0) + len(wanted_mixes))
    recipe_seed = getattr(validated.recipe, "seed", 0) if validated is not None else 0
    base_dir = validated.loaded.path.parent if validated is not None else None
    locate = validated.loaded.location if validated is not None else (lambda path: None)

    loaded: dict[str, Any] = {}
    info: dict = {"recipe": getattr(validated.recipe, "name", None) if validated is not None else None,
                  "seed": recipe_seed, "sources": {}}
    warnings: list[str] = []
    for name in sources:
        step(f"source {name}")
        ref = resolve(name, block.sources[name], locate, block_path + ("sources",))
        loaded[name], info["sources"][name] = load_source(ref, recipe_seed=recipe_seed, base_dir=base_dir)
        want = block.sources[name].sample
        if want and len(loaded[name]) < want:
            warnings.append(f"source '{name}': `sample: {want}` but only {len(loaded[name])} rows; all are used")

    out: dict[str, Any] = {n: loaded[n] for n in names if n in block.sources}
    parts: dict[str, dict[str, Any]] = {}
    split_outputs: dict[str, list[str]] = {}
    if needs_split:
        step("split")
        sp = block.split
        for name in [s for s in (sp.sources or list(block.sources)) if s in loaded]:
            parts[name] = split_dataset(loaded[name], sp.ratios, sp.seed, sp.group_by, name)
            for split, ds in parts[name].items():
                if len(ds) == 0:
                    warnings.append(f"split: source '{name}' has no rows in '{split}' ({len(loaded[name])} rows in all)")
        check_leakage(parts, sp.group_by)
        info["split"] = {"ratios": sp.ratios, "seed": sp.seed, "group_by": sp.group_by,
                         "counts": {s: {k: len(v) for k, v in p.items()} for s, p in parts.items()},
                         "totals": {k: sum(len(p[k]) for p in parts.values()) for k in sp.ratios}}
        for split in sp.ratios:
            split_outputs[split] = [f"{split}.{s}" for s in parts]
            for s in parts:
                out[f"{split}.{s}"] = parts[s][split]
            if split in names:
                nonempty = [parts[s][split] for s in parts if len(parts[s][split])]
                out[split] = concatenate_datasets(nonempty) if len(nonempty) > 1 else (
                    nonempty[0] if nonempty else next(iter(parts.values()))[split])
    mixes: dict[str, dict] = {}
    for name in wanted_mixes:
        step(f"mix {name}")
        mix = block.mix[name]
        pools = {s: parts[s][mix.from_] for s in parts} if mix.from_ else {s: loaded[s] for s in block.sources}
        if block.split and not mix.from_:
            warnings.append(f"mix '{name}' draws from the unsplit sources, so it can share rows with the split's "
                            f"outputs; set `from: {next(iter(block.split.ratios))}` to mix one split")
        domains = {s: info["sources"][s]["domain"] if isinstance(info["sources"][s]["domain"], str) else None
                   for s in pools}
        out[name], mixes[name], mix_warnings = build_mix(pools, mix, name, domains)
        warnings.extend(mix_warnings)
    if mixes:
        info["mixes"] = mixes
    out = {n: out[n] for n in names if n in out}
    return Materialized(datasets=out, files={n: files[n] for n in out}, info=info, warnings=warnings,
                        split_outputs=split_outputs, mix_files={m: files[m] for m in mixes})


# ------------------------------------------------------------------------------------------ writing


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file())):
        raise DataError(f"refusing to replace {display(out_dir)}: it is not empty and not a data build (no {MANIFEST}); "
                        "choose a new or empty directory")


def _publish(tmp: Path, out_dir: Path) -> None:
    """Replace `out_dir` by the finished build `tmp` (renames; the old build is removed afterwards)."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out_dir)


def build_data(validated: Any, out_dir: Path | str, *, names: Optional[list[str]] = None, block: Any = None,
               block_path: tuple = ("data",), progress: Optional[Progress] = None) -> DataOutputs:
    """Materialise the data block (or the `names` outputs) into `out_dir`; see the module docstring."""
    from engine import __version__
    from engine.data.encoding import write_jsonl
    from engine.runs.atomic import atomic_write_json

    out_dir = Path(out_dir).absolute()
    _check_target(out_dir)
    data_block = block if block is not None else getattr(validated.recipe, "data", None)
    writes = len(names) if names is not None else (len(data_block.output_names()) if data_block else 0)
    seen = {"total": 0}

    def loading(done: int, total: int, label: str) -> None:
        seen["total"] = total
        if progress:
            progress(done, total + writes, label)

    m = materialize(validated, names=names, block=block, block_path=block_path, progress=loading)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        outputs: dict[str, DataOutput] = {}
        for i, (name, ds) in enumerate(m.datasets.items()):
            if progress:
                progress(seen["total"] + i, seen["total"] + len(m.datasets), f"write {name}")
            rows, sha = write_jsonl(ds, tmp / m.files[name])
            outputs[name] = DataOutput(name=name, path=out_dir / m.files[name], rows=rows, sha256=sha)
        info = dict(m.info)
        for mix_name, rel in m.mix_files.items():
            info["mixes"][mix_name] = {"file": rel, "sha256": outputs[mix_name].sha256, **info["mixes"][mix_name]}
        if "split" in info:
            for split, members in m.split_outputs.items():
                index = _split_index(split, members, outputs, info)
                if index["files"]:
                    atomic_write_json(tmp / split / f"{split}_index.json", index)
        info_dirs = sorted({str(Path(rel).parent) for rel in m.mix_files.values()}) or (["."] if "split" in info else [])
        for d in info_dirs:
            atomic_write_json(tmp / d / "info.json", {"engine": __version__, **info})
        manifest = {"engine": __version__, "outputs": {n: {"file": m.files[n], "rows": o.rows, "sha256": o.sha256}
                                                       for n, o in outputs.items()},
                    "sources": {n: s["fingerprint"] for n, s in info["sources"].items()}, "warnings": m.warnings}
        atomic_write_json(tmp / MANIFEST, manifest)
        _publish(tmp, out_dir)
        if progress:
            progress(seen["total"] + len(m.datasets), seen["total"] + len(m.datasets), "done")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DataOutputs(dir=out_dir, outputs=outputs, info=info, warnings=m.warnings)


def _split_index(split: str, members: list[str], outputs: dict[str, DataOutput], info: dict) -> dict:
    sp = info["split"]
    files = {}
    for name in members:
        if name in outputs:
            source = name.split(".", 1)[1]
            domain = info["sources"][source]["domain"]
            files[source] = {"file": Path(outputs[name].path).name, "rows": outputs[name].rows,
                             "domain": domain, "sha256": outputs[name].sha256}
    out = {"split": split, "ratios": sp["ratios"], "seed": sp["seed"], "group_by": sp["group_by"],
           "rows": sum(f["rows"] for f in files.values()), "files": files}
    if split in outputs:
        out["all"] = {"file": Path(outputs[split].path).name, "rows": outputs[split].rows}
    return out


def data_fingerprints(validated: Any, *, block: Any = None, block_path: tuple = ("data",)) -> dict[str, dict]:
    """Source name -> fingerprint of its input, without loading any data (for the run lock): sha256 of local files
    and package files (cached by inode/size/mtime), a hash of inline rows, and the hub path/name/split/revision.
    `build_data` records the same plus the hub dataset's fingerprint and commit in info.json."""
    from engine.data.sources import fingerprint, resolve

    block = block if block is not None else validated.recipe.data
    if block is None:
        return {}
    out = {}
    for name, model in block.sources.items():
        ref = resolve(name, model, validated.loaded.location, block_path + ("sources",))
        out[name] = fingerprint(ref)
    return out


def read_manifest(out_dir: Path | str) -> Optional[dict]:
    """The manifest of a complete build, or None."""
    path = Path(out_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
