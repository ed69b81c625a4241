"""Opening generators: the engine a step asked for, kept alive across steps in `ctx.resources`.

`open_generator(model, generator="auto", resources=ctx.resources)` returns a loaded Generator (base.py). With
`resources`, engines live in a small pool keyed by (engine, model fingerprint): the steps of a loop epoch that
generate with the same model share one loaded engine, and the least recently used one is closed when a third
model arrives (a loop's old policy is released once the next epoch moves on). A vLLM engine also serves a new
LoRA adapter of the base it holds without reloading.

`auto` is vLLM where `import vllm` works, the transformers generator otherwise, and the endpoint generator for
endpoint models.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

from engine.generate.base import ChatText
from engine.recipe.errors import EngineError

POOL_KEY = "generators"
POOL_SIZE = 2


class GeneratorPool:
    def __init__(self, size: int = POOL_SIZE):
        self.size = size
        self.engines: "OrderedDict[tuple, Any]" = OrderedDict()

    def get(self, key: tuple) -> Optional[Any]:
        engine = self.engines.get(key)
        if engine is not None:
            self.engines.move_to_end(key)
        return engine

    def put(self, key: tuple, engine: Any) -> None:
        self.engines[key] = engine
        self.engines.move_to_end(key)
        while len(self.engines) > self.size:
            _, old = self.engines.popitem(last=False)
            old.close()

    def close(self) -> None:
        while self.engines:
            self.engines.popitem()[1].close()


def engine_name(model: dict, generator: str = "auto") -> str:
    """Which engine serves `model` for the step's `generator:` choice."""
    endpoint = model.get("type") == "Endpoint"
    if generator == "auto":
        if endpoint:
            return "endpoint"
        from engine.generate.vllm_gen import importable

        return "vllm" if importable() else "transformers"
    if endpoint and generator != "endpoint":
        raise EngineError(f"generator {generator} needs a model with weights, but the model is an endpoint "
                          f"({model.get('url')}); use `generator: endpoint` or `auto`")
    if not endpoint and generator == "endpoint":
        raise EngineError("generator endpoint needs an endpoint model (`source: endpoint`); serve the model with "
                          "`recipe serve` or a `serve` step, or use `generator: transformers`")
    return generator


def open_generator(model: Any, *, generator: str = "auto", recipe_dir: Path | str = ".",
                   resources: Optional[dict] = None, **options: Any) -> Any:
    """A loaded generator for `model` (a Model/Endpoint artifact or a model block)."""
    from engine.catalog import GENERATORS
    from engine.models.resolve import as_model_artifact

    artifact = as_model_artifact(model, recipe_dir)
    name = engine_name(artifact, generator)
    identity = artifact.get("fingerprint") or artifact.get("path") or artifact.get("url")
    pool: Optional[GeneratorPool] = None
    if resources is not None:
        pool = resources.setdefault(POOL_KEY, GeneratorPool())
        engine = pool.get((name, identity))
        if engine is not None:
            _apply(engine, options)
            return engine
        if name == "vllm":  # a new adapter of a base a vLLM engine already holds: swap the LoRA, keep the engine
            for key, held in list(pool.engines.items()):
                if key[0] == "vllm" and hasattr(held, "use") and held.use(artifact):
                    pool.engines.pop(key)
                    pool.put((name, identity), held)
                    return held
    factory = GENERATORS.get(name)
    target = (artifact.get("source") or artifact) if name == "endpoint" else artifact  # endpoints take their block
    engine = factory(target, **_accepted(name, options))
    if pool is not None:
        pool.put((name, identity), engine)
    return engine


def _accepted(name: str, options: dict) -> dict:
    allowed = {"transformers": {"batch_size", "device", "dtype", "cache", "progress"},
               "vllm": {"max_model_len", "cache", "progress"},
               "endpoint": {"progress", "backoff", "max_backoff"}}.get(name)
    return {k: v for k, v in options.items() if allowed is None or k in allowed}


def _apply(engine: Any, options: dict) -> None:
    """Per-step options on a pooled engine."""
    if "batch_size" in options and hasattr(engine, "batch_size"):
        engine.batch_size = max(1, int(options["batch_size"]))
    if "progress" in options and hasattr(engine, "progress"):
        engine.progress = options["progress"]


def generator_for(model: Any, *, recipe_dir: Path | str = ".", generator: str = "auto", resources: Optional[dict] = None,
                  **settings: Any) -> ChatText:
    """Text in, text out (`generate(prompts) -> list[str | None]`) for a model: what the LLM judge calls.

    `settings` are request fields (temperature, max_new_tokens, stop, seed, ...); default greedy, 512 new tokens.
    """
    engine = open_generator(model, generator=generator, recipe_dir=recipe_dir, resources=resources)
    settings.setdefault("max_new_tokens", 512)
    return ChatText(engine, **settings)
