"""Generation engines; they register here."""

from engine.catalog import GENERATORS

GENERATORS.declare("transformers", help="batched transformers generate, in process")
GENERATORS.declare("vllm", help="vLLM in process, or served from its side environment")
GENERATORS.declare("endpoint", help="an OpenAI-compatible or custom HTTP chat endpoint")
