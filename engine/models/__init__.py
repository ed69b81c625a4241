"""Model sources; they register here (lazily: `resolve(source, recipe_dir) -> Model artifact`)."""

from engine.catalog import MODEL_SOURCES

for _name in ("hub", "local", "gguf", "run", "tiny", "endpoint"):
    MODEL_SOURCES.register(_name, f"engine.models.{_name}:resolve")
