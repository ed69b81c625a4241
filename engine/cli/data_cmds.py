"""`recipe data preview` and `recipe data build`: look at a recipe's data, or materialise it as JSON Lines files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

import click

from engine.cli.main import cli, handle_errors, load, recipe_options
from engine.cli.output import echo, is_terminal, success, table

_DATA_REF = re.compile(r"\$\{\s*data\.([A-Za-z0-9_.\-]+)\s*(?:\||\})")


@cli.group()
def data() -> None:
    """Look at a recipe's data (preview) or materialise it (build)."""


def _referenced(tree: Any, names: list[str]) -> list[str]:
    """The data outputs the recipe's steps use (`${data.NAME}`), in output order."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k != "data":
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str):
            found.update(_DATA_REF.findall(node))
    walk(tree)
    return [n for n in names if n in found]


def _usage(recipe: Any, name: str) -> tuple[Optional[str], bool, Optional[int]]:
    """(template, trains?, max_length) of the first step or task that reads `${data.NAME}` with a template."""
    from engine.recipe.checks import iter_blocks

    ref = f"${{data.{name}}}"
    for _, block in iter_blocks(recipe):
        template = getattr(block, "template", None)
        if getattr(block, "data", None) == ref and isinstance(template, str) and "${" not in template:
            return template, getattr(block, "use", None) == "train", getattr(block, "max_length", None)
    return None, False, None


def _tokenizer(recipe: Any, path: Optional[str], locate: Any) -> tuple[Any, str]:
    """A tokenizer for token lengths: --tokenizer DIR, else the recipe's local model; else (None, why)."""
    from engine.recipe.models.model_sources import LocalModel

    target = path
    if target is None and isinstance(recipe.model, LocalModel):
        from engine.recipe.checks import resolve_local

        target = str(resolve_local(recipe.model.path, locate(("model", "path"))))
    if target is None:
        return None, "no local tokenizer (the model is not a local directory; pass --tokenizer DIR)"
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(target, local_files_only=True), f"tokenizer {target}"
    except Exception as exc:  # noqa: BLE001 - preview still works without token counts
        return None, f"cannot load a tokenizer from {target} ({str(exc).splitlines()[0][:120]})"


def _render_text(template: Any, row: dict, trains: bool, tokenizer: Any) -> str:
    from engine.data.templates import render

    rendered = render(template, row, with_target=trains)
    messages = list(rendered.messages)
    if rendered.target is not None:
        messages.append({"role": "assistant", "content": rendered.target})
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=rendered.target is None)
    return "\n\n".join(m["content"] for m in messages)


def _show_example(i: int, row: dict, template: Any, trains: bool) -> None:
    from engine.data.templates import render

    echo(f"--- example {i + 1} (id {row.get('id')}, source {row.get('source')})")
    if template is None:
        echo(json.dumps(row, ensure_ascii=False, indent=1)[:2000])
        return
    rendered = render(template, row, with_target=trains)
    for m in rendered.messages:
        echo(f"[{m['role']}]\n{m['content']}")
    if rendered.target is not None:
        echo(f"[assistant: target]\n{rendered.target}")


@data.command()
@recipe_options
@click.option("--n", "n", default=5, show_default=True, help="Examples to show per output.")
@click.option("--name", "names", multiple=True, metavar="NAME",
              help="Data output to preview, e.g. train_mixed or test.gsm8k (default: the ones the steps use).")
@click.option("--template", "template_name", help="Render through this template (default: the step's template).")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(), help="Tokenizer directory for token lengths.")
@click.option("--max-length", type=int, help="Report the share of examples longer than this (default: the step's).")
@handle_errors
def preview(recipe: str, profiles: tuple, sets: tuple, unsets: tuple, n: int, names: tuple,
            template_name: Optional[str], tokenizer_path: Optional[str], max_length: Optional[int]) -> None:
    """Rendered examples, field statistics and token lengths of a recipe's data (nothing is written)."""
    from engine.data.build import materialize
    from engine.data.peek import field_stats, histogram
    from engine.data.templates import TemplateRenderError, load_template
    from engine.data.transforms import output_row
    from engine.recipe.validate import validate as run_validate

    v = run_validate(load(recipe, profiles, sets, unsets))
    r = v.recipe
    if r.data is None:
        raise click.UsageError("the recipe has no `data:` block")
    all_names = r.data.output_names()
    chosen = list(names) or _referenced(v.tree, all_names) or list(r.data.sources)
    m = materialize(v, names=chosen)
    tokenizer, why = _tokenizer(r, tokenizer_path, v.loaded.location)
    for name, ds in m.datasets.items():
        step_template, trains, step_max = _usage(r, name)
        spec = template_name or step_template
        template = load_template(spec) if spec else None
        limit = max_length or step_max
        echo(f"\n== data.{name}: {len(ds)} rows" + (f" — template {template.name}" + (" (with target)" if trains else "")
                                                    if template else ""))
        sample = [output_row(row) for row in ds.select(range(min(len(ds), 2000)))]
        table(f"fields of data.{name}" + (f" (first {len(sample)} rows)" if len(sample) < len(ds) else ""),
              ["field", "rows", "types", "mean / max length"], field_stats(sample))
        for i, row in enumerate(sample[:n]):
            try:
                _show_example(i, row, template, trains)
            except TemplateRenderError as exc:
                echo(f"  cannot render: {exc}")
                template = None
        if template is None:
            continue
        try:
            texts = [_render_text(template, row, trains, tokenizer) for row in sample]
        except TemplateRenderError as exc:
            echo(f"token lengths: {exc}")
            continue
        if tokenizer is not None:
            lengths, unit = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts], "tokens"
        else:
            lengths, unit = [len(t.split()) for t in texts], "words"
            echo(f"token lengths: {why}; counting whitespace-separated words instead")
        echo(f"{unit} per example: mean {sum(lengths) / len(lengths):.0f}, max {max(lengths)}")
        width = max(c for _, _, c in histogram(lengths)) or 1
        for lo, hi, count in histogram(lengths):
            echo(f"  {lo:>6}-{hi:<6} {'#' * max(1 if count else 0, round(30 * count / width)):<30} {count}")
        if limit:
            over = sum(1 for x in lengths if x > limit)
            echo(f"longer than max_length {limit}: {over} of {len(lengths)} ({over / len(lengths):.1%})"
                 + (" (words, not tokens)" if tokenizer is None else ""))
    for w in m.warnings:
        echo(f"warning: {w}", err=True)


@data.command()
@recipe_options
@click.option("-o", "--output", default="data", show_default=True, type=click.Path(file_okay=False),
              help="Output directory (replaced only if it is a previous data build).")
@click.option("--name", "names", multiple=True, metavar="NAME", help="Build only these outputs (default: all).")
@handle_errors
def build(recipe: str, profiles: tuple, sets: tuple, unsets: tuple, output: str, names: tuple) -> None:
    """Materialise a recipe's data: every data.* output as a JSONL file, plus info.json and split indexes."""
    from engine.data.build import build_data
    from engine.recipe.validate import validate as run_validate

    v = run_validate(load(recipe, profiles, sets, unsets))
    if is_terminal():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task("data", total=None)

            def progress(done: int, total: int, label: str) -> None:
                bar.update(task, completed=done, total=total, description=label)
            out = build_data(v, Path(output), names=list(names) or None, progress=progress)
    else:
        out = build_data(v, Path(output), names=list(names) or None,
                         progress=lambda done, total, label: label != "done" and echo(f"[{done + 1}/{total}] {label}"))
    table("data outputs", ["output", "rows", "file"],
          [(f"data.{name}", o.rows, str(o.path.relative_to(out.dir))) for name, o in out.outputs.items()])
    for w in out.warnings:
        echo(f"warning: {w}", err=True)
    success(f"wrote {len(out.outputs)} data output{'s' if len(out.outputs) != 1 else ''} to {out.dir}")
