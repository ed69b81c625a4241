"""Generation engines; they register here. The interface is engine/generate/base.py; docs/generation.md."""

from typing import Any

from engine.catalog import GENERATORS

GENERATORS.register("transformers", "engine.generate.transformers_gen:TransformersGenerator",
                    help="batched transformers generate, in process")
GENERATORS.register("vllm", "engine.generate.vllm_gen:open_vllm",
                    help="vLLM in process, or served from its side environment")
GENERATORS.register("endpoint", "engine.generate.endpoint:EndpointGenerator",
                    help="an OpenAI-compatible or custom HTTP chat endpoint")


def open_generator(model: Any, **options: Any) -> Any:
    """A loaded generator for a model artifact or block (see engine.generate.engines)."""
    from engine.generate.engines import open_generator as open_

    return open_(model, **options)


def generator_for(model: Any, **settings: Any) -> Any:
    """Text in, text out for a model (the LLM judge's generator; see engine.generate.engines)."""
    from engine.generate.engines import generator_for as for_

    return for_(model, **settings)
