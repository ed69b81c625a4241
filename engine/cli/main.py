"""The `recipe` command line: parse, call the library, print. Heavy imports happen inside commands."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

import click

from engine import __version__
from engine.recipe.errors import EngineError, RecipeErrors


def handle_errors(fn: Callable) -> Callable:
    """Recipe problems exit 2, run failures exit 1, both without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RecipeErrors as exc:
            click.echo(exc.render(), err=True)
            sys.exit(2)
        except EngineError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug in the engine, not in the recipe: say so, keep the trace on request
            if os.environ.get("RECIPE_ENGINE_DEBUG"):
                raise
            click.echo(f"internal error: {type(exc).__name__}: {exc}\n"
                       "This is a bug in recipe-engine, not in your recipe; set RECIPE_ENGINE_DEBUG=1 for the traceback.", err=True)
            sys.exit(70)

    return wrapper


def recipe_options(fn: Callable) -> Callable:
    """RECIPE plus --profile / --set / --unset, shared by every command that loads a recipe."""
    fn = click.option("--unset", "unsets", multiple=True, metavar="PATH", help="Delete a key, e.g. --unset model.revision.")(fn)
    fn = click.option("--set", "sets", multiple=True, metavar="PATH=VALUE",
                      help="Override a key (YAML-typed), e.g. --set loop.steps.train.learning_rate=1e-5.")(fn)
    fn = click.option("--profile", "-p", "profiles", multiple=True, metavar="NAME", help="Apply a profile (repeatable, in order).")(fn)
    return click.argument("recipe")(fn)


def load(recipe: str, profiles: tuple, sets: tuple, unsets: tuple):
    from engine.recipe.loader import load_recipe

    return load_recipe(recipe, profiles=profiles, sets=sets, unsets=unsets)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="recipe")
def cli() -> None:
    """Declarative YAML recipes for LLM post-training: validate, compile, run, compare.

    \b
    Quick start:
      recipe run quickstart                 # a shipped recipe, by name
      recipe validate my_recipe.yaml        # every problem at once, with file:line
      recipe compile my_recipe.yaml -o plan # the plan, without running anything
    """


def run_recipe() -> None:
    """`run-recipe R.yaml ...` is `recipe run R.yaml ...`."""
    cli.main(args=["run", *sys.argv[1:]], prog_name="run-recipe")


def _register() -> None:
    from engine.cli import data_cmds, recipe_cmds, report_cmds, run_cmds, serve_cmd  # noqa: F401  (commands attach themselves)
    from engine.envs.commands import attach

    attach(cli)


_register()
