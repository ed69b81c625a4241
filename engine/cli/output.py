"""Printing: rich tables on a terminal, plain text when piped."""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence

import click


def is_terminal() -> bool:
    return sys.stdout.isatty()


def echo(text: str = "", err: bool = False) -> None:
    click.echo(text, err=err)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on a terminal; tab-separated lines when piped (easy to grep and cut)."""
    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title or None, show_lines=False)
        for c in columns:
            t.add_column(str(c))
        for r in rows:
            t.add_row(*["" if v is None else str(v) for v in r])
        Console().print(t)
        return
    if title:
        click.echo(f"# {title}")
    click.echo("\t".join(columns))
    for r in rows:
        click.echo("\t".join("" if v is None else str(v) for v in r))


def dump_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def success(text: str) -> None:
    click.echo(click.style("✓ ", fg="green") + text if is_terminal() else f"ok: {text}")
