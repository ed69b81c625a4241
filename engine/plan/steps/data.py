"""The recipe's data at execution: `${data.*}` outputs built once per content, and the `data` step type.

`build_outputs` materialises the whole `data:` block into the engine's cache, keyed by the block itself, the
recipe seed and the fingerprints of its local files (hub sources by path, config, split and revision), so a
second run with the same data — another learning rate, another model — reuses the files instead of
downloading and processing again (seed 001's `--skip-download --skip-process`). The `data` step copies a
build into its own directory under the recipe's file names (e.g. seed 001's `data/` layout).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from engine.data.fingerprints import canonical_json, fingerprint_path, fingerprint_text
from engine.paths import cache_dir
from engine.plan.context import StepContext
from engine.recipe.errors import EngineError, Location
from engine.recipe.models.data import DataBlock

_LOCAL = ("jsonl", "json", "csv", "parquet", "disk")


@dataclass
class _Loaded:
    path: Path

    def location(self, path: tuple) -> Optional[Location]:
        """Plan paths are relative to the recipe's directory: every key 'was written' in the recipe file."""
        return Location(str(self.path))


@dataclass
class _Recipe:
    name: str
    seed: int
    data: DataBlock


@dataclass
class PlanData:
    """What the data layer reads off a validated recipe, rebuilt from a plan (paths relative to `recipe_dir`)."""

    recipe: _Recipe
    loaded: _Loaded

    @classmethod
    def from_plan(cls, plan: dict, recipe_dir: Path) -> "PlanData":
        body = {k: v for k, v in plan["data"].items() if k != "outputs"}
        block = DataBlock.model_validate(body)
        return cls(recipe=_Recipe(plan["name"], plan["seed"], block), loaded=_Loaded(recipe_dir / "recipe.yaml"))


def data_key(plan: dict, recipe_dir: Path) -> str:
    """Identity of a data build: the block, the seed and the content of every local file it reads."""
    files = {}
    for name, source in (plan["data"].get("sources") or {}).items():
        if source["source"] in _LOCAL:
            target = (recipe_dir / source["path"]).resolve()
            files[name] = fingerprint_path(target) if target.exists() else None
    body = {k: v for k, v in plan["data"].items() if k != "outputs"}
    return fingerprint_text(canonical_json({"data": body, "seed": plan["seed"], "files": files}))[:32]


def _artifacts(target: Path, manifest: dict) -> dict[str, dict]:
    return {name: {"type": "Dataset", "path": str(target / o["file"]), "rows": o["rows"], "fingerprint": o["sha256"]}
            for name, o in manifest["outputs"].items()}


def build_outputs(plan_data: dict, *, recipe_dir: Path, out_dir: Path, seed: int, plan: Optional[dict] = None,
                  progress: Optional[Callable] = None) -> dict[str, dict]:
    """Every `data.*` output of the plan as Dataset artifacts, built once per content in the cache."""
    from engine.data.build import build_data, read_manifest
    from engine.data.sources import DataError

    plan = plan or {"name": "data", "seed": seed, "data": plan_data}
    target = cache_dir() / "data" / data_key(plan, recipe_dir)
    if read_manifest(target) is None:
        try:
            build_data(PlanData.from_plan(plan, recipe_dir), target, progress=progress)
        except DataError as exc:
            raise EngineError(f"data: {exc}") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "build.txt").write_text(f"{target}\n", encoding="utf-8")
    return _artifacts(target, read_manifest(target))


def _name_metadata(root: Path, pattern: str, wanted: str | bool) -> None:
    """`info:` / `index:` of the step: the build's metadata files matching `pattern` renamed, or removed (`false`)."""
    if wanted == pattern:
        return
    for path in list(root.rglob(pattern)):
        if wanted is False:
            path.unlink()
        else:
            path.rename(path.with_name(wanted))


def run(ctx: StepContext) -> dict[str, dict]:
    """The `data` step: materialise the outputs into the step directory, with `files:` renames."""
    plan = ctx.plan
    if not plan.get("data"):
        raise EngineError(f"{ctx.step_id}: the recipe has no `data:` block to build")
    built = build_outputs(plan["data"], recipe_dir=ctx.recipe_dir, out_dir=ctx.step_dir / "build", seed=ctx.seed, plan=plan)
    wanted = ctx.param("outputs") or list(built)
    missing = [n for n in wanted if n not in built]
    if missing:
        raise EngineError(f"{ctx.step_id}: no data output {', '.join(missing)}; outputs are {', '.join(built)}")
    source_dir = Path(built[wanted[0]]["path"]).parent
    while not (source_dir / "data.json").is_file() and source_dir != source_dir.parent:
        source_dir = source_dir.parent
    dest = ctx.step_dir / (ctx.save_name or "data")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source_dir, tmp)
    if ctx.param("outputs"):  # only the outputs asked for (with the mixing metadata and indexes)
        for name in set(built) - set(wanted):
            (tmp / Path(built[name]["path"]).relative_to(source_dir)).unlink(missing_ok=True)
    _name_metadata(tmp, "info.json", ctx.param("info", "info.json"))
    index = ctx.param("index", "test_index.json")  # names the test split's index; `false` drops every split's
    _name_metadata(tmp, "*_index.json" if index is False else "test_index.json", index)
    for name, rel in (ctx.param("files") or {}).items():
        if name not in built:
            raise EngineError(f"{ctx.step_id}.files: no data output '{name}'")
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built[name]["path"], tmp / rel)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return {"dir": {"type": "Value", "value": str(dest), "path": str(dest)}}
