"""Generated artefacts: docs/cli.md (every command's --help), schemas/recipe.schema.json, docs/recipe-reference.md.

`python -m engine.cli.reference` rewrites them; tests/test_generated.py fails when a checked-in copy is stale.
"""

from __future__ import annotations

from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]


def cli_markdown() -> str:
    from engine.cli.main import cli

    lines = ["# CLI reference", "", "Generated from the commands' help by `python -m engine.cli.reference`; do not edit.", ""]

    def walk(cmd: click.Command, names: list[str], parent: click.Context | None) -> None:
        ctx = click.Context(cmd, info_name=" ".join(names), parent=None, max_content_width=100, terminal_width=100)
        lines.extend([f"## `{' '.join(names)}`", "", "```text", cmd.get_help(ctx), "```", ""])
        if isinstance(cmd, click.Group):
            for sub in sorted(cmd.list_commands(ctx)):
                walk(cmd.get_command(ctx, sub), names + [sub], ctx)

    walk(cli, ["recipe"], None)
    return "\n".join(lines).rstrip() + "\n"


def artefacts() -> dict[Path, str]:
    from engine.recipe.schema import reference_markdown, schema_text

    return {
        ROOT / "schemas" / "recipe.schema.json": schema_text(),
        ROOT / "docs" / "recipe-reference.md": reference_markdown(),
        ROOT / "docs" / "cli.md": cli_markdown(),
    }


def main() -> None:
    for path, text in artefacts().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
