"""`python -m engine.cli ...` is `recipe ...`."""

from engine.cli.main import cli

cli(prog_name="recipe")
