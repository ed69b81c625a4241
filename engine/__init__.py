"""recipe-engine: a declarative YAML recipe engine for LLM post-training."""

__version__ = "0.1.0"
