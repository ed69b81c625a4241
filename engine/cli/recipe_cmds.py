"""Commands on recipes that never import torch: validate, compile, show, diff, schema, list, new."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from engine.cli.main import cli, handle_errors, load, recipe_options
from engine.cli.output import dump_json, echo, success, table


@cli.command()
@recipe_options
@click.option("--no-files", is_flag=True, help="Do not check that local files exist.")
@handle_errors
def validate(recipe: str, profiles: tuple, sets: tuple, unsets: tuple, no_files: bool) -> None:
    """Check a recipe: schema, references, names, files, and templates rendered on the first row of local data."""
    from engine.recipe.render_check import render_checks
    from engine.recipe.validate import validate as run_validate

    loaded = load(recipe, profiles, sets, unsets)
    v = run_validate(loaded, check_files=not no_files)
    notes = render_checks(v)
    r = v.recipe
    steps = _count_steps(r)
    success(f"{loaded.path.name}: valid {r.kind} recipe '{r.name or loaded.path.stem}' ({steps} step{'s' if steps != 1 else ''})"
            + (f", profiles: {', '.join(loaded.applied_profiles)}" if loaded.applied_profiles else ""))
    for note in notes:
        echo(f"  {note}")
    if v.trust:
        echo("This recipe runs code beyond the engine's own (trust it before running):")
        for item in v.trust:
            echo(f"  - {item}")


def _count_steps(r) -> int:
    if r.kind == "loop":
        return len(r.loop.steps)
    if r.kind == "pipeline":
        return len(r.stages)
    return 1


@cli.command(name="compile")
@recipe_options
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Write plan.json and resolved.yaml into this directory.")
@handle_errors
def compile_cmd(recipe: str, profiles: tuple, sets: tuple, unsets: tuple, output: str | None) -> None:
    """Compile a recipe into its plan (steps, resolved hyperparameters, batch arithmetic, launch commands)."""
    from engine.plan.compile import compile_recipe
    from engine.recipe.yaml_io import dump_yaml
    from engine.recipe.validate import validate as run_validate

    loaded = load(recipe, profiles, sets, unsets)
    plan = compile_recipe(run_validate(loaded))
    if not output:
        dump_json(plan)
        return
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(plan, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "resolved.yaml").write_text(dump_yaml(loaded.tree), encoding="utf-8")
    success(f"wrote {out / 'plan.json'} and {out / 'resolved.yaml'}")


@cli.command()
@recipe_options
@click.option("--origin", is_flag=True, help="Show which file, profile or override set each key.")
@handle_errors
def show(recipe: str, profiles: tuple, sets: tuple, unsets: tuple, origin: bool) -> None:
    """Print the resolved recipe (after include, profiles and overrides)."""
    from engine.recipe.errors import format_path
    from engine.recipe.yaml_io import dump_yaml

    loaded = load(recipe, profiles, sets, unsets)
    if not origin:
        click.echo(dump_yaml(loaded.tree), nl=False)
        return
    rows = []
    for path, source in loaded.origins.items():
        value = _get(loaded.tree, path)
        loc = loaded.locations.get(path)
        where = f"{source}:{loc.line}" if loc and loc.line else source
        rows.append((format_path(path), json.dumps(value, ensure_ascii=False), where))
    table("", ["key", "value", "origin"], rows)


def _get(tree, path):
    node = tree
    for p in path:
        node = node[p]
    return node


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def diff(a: str, b: str, fmt: str) -> None:
    """Compare two recipes or two run directories. Exit 0 when the same, 1 when different, 2 on error."""
    from engine.recipe.compare import compare_sources

    result = compare_sources(a, b)
    if fmt == "json":
        dump_json(result)
    else:
        from engine.recipe.compare import render_text

        click.echo(render_text(result), nl=False)
    sys.exit(1 if result["different"] else 0)


@cli.command()
@click.option("--reference", is_flag=True, help="Print the Markdown recipe reference instead of the JSON Schema.")
@handle_errors
def schema(reference: bool) -> None:
    """Print the JSON Schema of the recipe format (for editors) or the recipe reference."""
    from engine.recipe.schema import reference_markdown, schema_text

    click.echo(reference_markdown() if reference else schema_text(), nl=False)


LISTABLE = ("recipes", "templates", "steps", "methods", "scorers", "generators", "adapters", "model-sources", "profiles")


@cli.command(name="list")
@click.argument("what", required=False, type=click.Choice(LISTABLE))
@click.argument("recipe", required=False)
@handle_errors
def list_cmd(what: str | None, recipe: str | None) -> None:
    """List shipped recipes, templates and every registered name (steps, methods, scorers, ...).

    `recipe list profiles RECIPE` lists a recipe's profiles.
    """
    from engine import catalog

    sections = [what] if what else [w for w in LISTABLE if w != "profiles"]
    for section in sections:
        if section == "recipes":
            from engine.recipe.loader import list_shipped_recipes

            rows = [(name, _recipe_summary(name)) for name in list_shipped_recipes()]
        elif section == "templates":
            from engine.data.templates import list_templates, load_template

            rows = [(name, load_template(name).description) for name in list_templates()]
        elif section == "profiles":
            if not recipe:
                raise click.UsageError("recipe list profiles RECIPE")
            loaded = load(recipe, (), (), ())
            rows = [(name, ", ".join(body)) for name, body in loaded.profiles.items()]
        else:
            reg = catalog.FAMILIES[section]
            rows = [(name, reg.help(name), "yes" if reg.is_executable(name) else "not yet") for name in reg.names()]
            table(section, ["name", "description", "executable"], rows)
            continue
        table(section, ["name", "description"], rows)


def _recipe_summary(name: str) -> str:
    from engine.recipe.loader import resolve_recipe_path

    for line in resolve_recipe_path(name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


@cli.command()
@click.argument("kind", type=click.Choice(["train", "eval", "loop", "pipeline"]))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file (refuses to overwrite).")
@handle_errors
def new(kind: str, output: str | None) -> None:
    """Print a commented starter recipe of a kind."""
    from engine.recipe.errors import EngineError

    text = (Path(__file__).resolve().parent.parent / "recipe" / "starters" / f"{kind}.yaml").read_text(encoding="utf-8")
    if not output:
        click.echo(text, nl=False)
        return
    target = Path(output)
    if target.exists():
        raise EngineError(f"{target} exists; choose another name or delete it first")
    target.write_text(text, encoding="utf-8")
    success(f"wrote {target}")
