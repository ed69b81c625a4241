"""Model sources; they register here."""

from engine.catalog import MODEL_SOURCES

for _name in ("hub", "local", "gguf", "run", "tiny", "endpoint"):
    MODEL_SOURCES.declare(_name)
