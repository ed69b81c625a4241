"""`recipe env create|path|versions NAME`: the side environments. Attach with `engine.envs.commands.attach(cli)`."""

from __future__ import annotations

import importlib
import json

import click

from engine.envs import SIDE_ENVS


def _module(name: str):
    if name not in SIDE_ENVS:
        raise click.BadParameter(f"unknown environment {name!r}; choose from {', '.join(SIDE_ENVS)}")
    return importlib.import_module(SIDE_ENVS[name])


@click.group("env")
def env() -> None:
    """Side environments (Axolotl) the engine runs in subprocesses."""


@env.command("create")
@click.argument("name")
@click.option("--force", is_flag=True, help="Rebuild even if it exists.")
def create(name: str, force: bool) -> None:
    """Build the NAME environment in the engine's cache (axolotl: several minutes, ~4 GB)."""
    python = _module(name).create(force=force, echo=click.echo)
    click.echo(f"ready: {python}")


@env.command("path")
@click.argument("name")
def path(name: str) -> None:
    """Print the environment's python."""
    click.echo(str(_module(name).locate()))


@env.command("versions")
@click.argument("name")
def versions(name: str) -> None:
    """Print the versions of the packages installed in the environment."""
    click.echo(json.dumps(_module(name).versions(), indent=2))


def attach(cli: click.Group) -> None:
    cli.add_command(env)
