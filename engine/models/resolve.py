"""Turn a recipe's model block (or an upstream artifact) into a Model artifact: a local HF-format directory.

Each source is one module registered in `engine.models` (MODEL_SOURCES) with `resolve(source, recipe_dir)`:
`hub` (snapshot_download pinned by revision), `local` (a directory), `gguf` (converted once into the cache),
`run` (a model output of an earlier run), `tiny` (built locally and deterministically, cached by its
parameters). `endpoint` is not a weight directory: it resolves to an Endpoint artifact.

A Model artifact is `{"type": "Model", "kind": "base" | "adapter" | "merged", "path": DIR, "source": {...},
"fingerprint": str}`; an adapter also has `"base"`, the Model artifact it was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from engine.recipe.errors import EngineError

MODEL_KINDS = ("base", "adapter", "merged")


def model_artifact(path: Path | str, *, source: dict, fingerprint: str, kind: str = "base",
                   base: Optional[dict] = None, **extra: Any) -> dict:
    """A Model artifact dict (see the module docstring)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
    out: dict[str, Any] = {"type": "Model", "kind": kind, "path": str(Path(path).resolve()), "source": dict(source),
                           "fingerprint": fingerprint}
    if base is not None:
        out["base"] = base
    out.update(extra)
    return out


def resolve_model(source: dict, recipe_dir: Path | str) -> dict:
    """The Model (or Endpoint) artifact of a model block such as `{source: hub, path: Qwen/Qwen2.5-0.5B}`."""
    from engine.catalog import MODEL_SOURCES

    if not isinstance(source, dict) or "source" not in source:
        raise EngineError(f"a model is a mapping with `source:` (hub, local, gguf, run, tiny, endpoint), got {source!r}")
    resolver = MODEL_SOURCES.get(source["source"])
    artifact = resolver(dict(source), Path(recipe_dir))
    if artifact.get("type") != "Model":
        return artifact
    if source["source"] == "run":  # the recipe's loading options apply to the earlier run's model too
        artifact = _with_loading_options(artifact, source)
    options = loading_options(source, LOADING_OPTIONS[:3])  # trust_remote_code does not change what it generates
    if options:  # they change what the model generates: part of its identity for the step cache
        from engine.data.fingerprints import canonical_json, fingerprint_text

        artifact["fingerprint"] = f"{artifact['fingerprint']}+options:{fingerprint_text(canonical_json(options))[:16]}"
    if source.get("tokenizer") and source["source"] in ("hub", "local"):  # gguf bakes its tokenizer into the conversion
        where, digest = tokenizer_dir(source["tokenizer"], Path(recipe_dir))
        artifact.update(tokenizer=str(where), fingerprint=f"{artifact['fingerprint']}+tokenizer:{digest}")
    return artifact


LOADING_OPTIONS = ("dtype", "chat_template", "chat_template_kwargs", "trust_remote_code")


def loading_options(source: dict, keys: tuple = LOADING_OPTIONS) -> dict:
    """The options of a model block that change how it loads and prompts, where the block sets them."""
    return {k: source[k] for k in keys if source.get(k) not in (None, "auto", {}, False)}


def _with_loading_options(artifact: dict, source: dict) -> dict:
    """A copy of `artifact` whose base model's source block carries the options (and display name) `source` sets."""
    import copy

    out = copy.deepcopy(artifact)
    base_of(out).setdefault("source", {}).update(loading_options(source, ("name", *LOADING_OPTIONS)))
    return out


TOKENIZER_FILES = ["tokenizer*", "special_tokens_map.json", "*.model", "vocab*", "merges.txt", "*.tiktoken",
                   "chat_template.*", "added_tokens.json"]


def tokenizer_dir(spec: str, recipe_dir: Path) -> tuple[Path, str]:
    """A model block's `tokenizer:` (a directory, relative to the recipe, or a hub id) as a local directory."""
    from engine.data.fingerprints import fingerprint_path

    candidate = Path(spec).expanduser()
    candidate = candidate if candidate.is_absolute() else recipe_dir / candidate
    if candidate.is_dir():
        if not any(candidate.glob("tokenizer*")):
            raise EngineError(f"tokenizer {spec!r}: {candidate} has no tokenizer files (tokenizer.json / "
                              f"tokenizer_config.json); give a directory saved with save_pretrained, or a hub id")
        return candidate.resolve(), fingerprint_path(candidate)["sha256"]
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        path = Path(snapshot_download(repo_id=spec, allow_patterns=TOKENIZER_FILES))
    except (LocalEntryNotFoundError, RepositoryNotFoundError, OSError) as exc:
        raise EngineError(f"tokenizer {spec!r} is neither a directory nor a hub id that can be downloaded here ({exc}); "
                          f"give a directory with tokenizer files, relative to the recipe") from None
    return path, f"hub:{spec}@{path.name}"


def as_model_artifact(value: Any, recipe_dir: Path | str) -> dict:
    """A step input that should be a model: an artifact as is, a model block resolved, anything else an error."""
    if isinstance(value, dict) and value.get("type") in ("Model", "Endpoint"):
        return value
    if isinstance(value, dict) and "source" in value:
        return resolve_model(value, recipe_dir)
    raise EngineError(f"expected a model (a Model artifact or a model block with `source:`), got {value!r}")


def base_of(artifact: dict) -> dict:
    """The plain model under an adapter (the artifact itself for base and merged models)."""
    while artifact.get("kind") == "adapter":
        artifact = artifact["base"]
    return artifact


def require_dir(path: Path, what: str, fix: str) -> Path:
    """`path` when it is a model directory (has config.json), else a clear EngineError."""
    if not path.is_dir():
        raise EngineError(f"{what}: {path} is not a directory; {fix}")
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise EngineError(f"{what}: {path} has no config.json (not a Hugging Face model directory); {fix}")
    return path
