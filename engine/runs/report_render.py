"""How a run report looks: the blocks its sections are made of (tables, plots, text) and their two renderings.

`render_markdown` gives report.md (plots as links into `report/`), `render_html` one self-contained report.html
page (inline CSS, plots as base64 PNG, no external files, scripts or fonts). `fmt`, `ci_text` and `slug` format
values, confidence intervals and file names the same way for both.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from typing import Any

PLOT_DIR = "report"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Plot:
    name: str  # file name inside report/
    png: bytes
    caption: str


@dataclass
class Text:
    text: str


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ values


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def ci_text(ci: Any) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return f"[{ci[0]:.3g}, {ci[1]:.3g}]"
    return ""


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "plot"

# ------------------------------------------------------------------------------------------------ rendering


def _md_cell(value: Any) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                header = block.columns if any(block.columns) else ["key", "value"]
                lines.append("| " + " | ".join(_md_cell(c) for c in header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in block.rows]
            elif isinstance(block, Plot):
                lines.append(f"![{block.caption}]({PLOT_DIR}/{block.name})")
            elif isinstance(block, Text):
                lines.append(block.text)
            lines.append("")
    return "\n".join(lines)


STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:1150px;padding:0 1rem;
color:#1d2330;background:#fff}
h1{font-size:1.6rem;border-bottom:2px solid #3b6fd8;padding-bottom:.4rem}
h2{font-size:1.2rem;margin-top:2rem;color:#23407a}
table{border-collapse:collapse;margin:.6rem 0;font-size:.85rem}
th,td{border:1px solid #d5dae3;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#eef2f9}
tr:nth-child(even) td{background:#f8f9fc}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;display:block;margin:.8rem 0;border:1px solid #e3e6ec}
p{margin:.45rem 0}
.status-done{color:#17803d;font-weight:600}.status-failed,.status-interrupted{color:#b42318;font-weight:600}
.status-running{color:#b54708;font-weight:600}
footer{margin-top:3rem;font-size:.75rem;color:#6b7280}
"""

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$")


def _td(value: Any) -> str:
    text = fmt(value)
    classes = []
    if _NUMBER.match(text):
        classes.append("num")
    if text in ("done", "failed", "interrupted", "running"):
        classes.append(f"status-{text}")
    cls = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{cls}>{html.escape(text)}</td>"


def render_html(title: str, sections: list[Section]) -> str:
    """One HTML page with inline CSS and base64 PNGs: no external files, scripts or fonts."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        out.append(f'<section id="{slug(section.title).lower()}"><h2>{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Table):
                out.append("<table>")
                if any(block.columns):
                    out.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in block.columns) + "</tr>")
                out += ["<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in block.rows]
                out.append("</table>")
            elif isinstance(block, Plot):
                data = base64.b64encode(block.png).decode("ascii")
                out.append(f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
            elif isinstance(block, Text):
                out.append(f"<p>{html.escape(block.text)}</p>")
        out.append("</section>")
    out.append("<footer>Written by recipe-engine from the run directory; `recipe report RUN_DIR` rewrites it.</footer>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
