"""Training backends and launchers; backends register here."""

from engine.catalog import BACKENDS

BACKENDS.register("trl", "engine.backends.trl", help="TRL trainers in this environment")
BACKENDS.register("axolotl", "engine.backends.axolotl", help="Axolotl in its side environment")
