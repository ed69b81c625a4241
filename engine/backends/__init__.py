"""Training backends and launchers; backends register here."""

from engine.catalog import BACKENDS

BACKENDS.declare("trl", help="TRL trainers in this environment")
BACKENDS.declare("axolotl", help="Axolotl in its side environment")
