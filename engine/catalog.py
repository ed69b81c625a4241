"""The registries of every pluggable family, in one place so `recipe list` and validation see the same names.

Implementations register as lazy "module:attr" strings; names the recipe language defines whose execution
has not landed are declared, and `Registry.get` says so plainly instead of pretending.
"""

from __future__ import annotations

from engine.registry import Registry

STEPS: Registry = Registry("step", "step types (`use:`)")
METHODS: Registry = Registry("method", "training methods (`method:`)")
BACKENDS: Registry = Registry("backend", "training backends (`backend:`)")
GENERATORS: Registry = Registry("generator", "generation engines (`generator:`)")
SCORERS: Registry = Registry("scorer", "scorers (`scorer:`)")
ADAPTERS: Registry = Registry("adapter", "dataset adapters (`adapter:`)")
MODEL_SOURCES: Registry = Registry("model source", "model sources (`model.source`)")

FAMILIES: dict[str, Registry] = {
    "steps": STEPS,
    "methods": METHODS,
    "backends": BACKENDS,
    "generators": GENERATORS,
    "scorers": SCORERS,
    "adapters": ADAPTERS,
    "model-sources": MODEL_SOURCES,
}


def _populate() -> None:
    """Each family package registers its own names (lazily: no implementation is imported here)."""
    import engine.backends  # noqa: F401
    import engine.data  # noqa: F401
    import engine.generate  # noqa: F401
    import engine.methods  # noqa: F401
    import engine.models  # noqa: F401
    import engine.plan  # noqa: F401
    import engine.score  # noqa: F401


_populate()
