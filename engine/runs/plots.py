"""The report's plots, as PNG bytes: loss curves, per-epoch lines, bars with confidence intervals, confusion matrices.

matplotlib is imported only when a plot is drawn, and only its object-oriented API with the Agg canvas is used
(no pyplot, no global backend switch), so drawing is safe inside any process.
"""

from __future__ import annotations

import io
import math
from typing import Optional, Sequence

WIDTH, HEIGHT, DPI = 7.5, 3.6, 100
Point = tuple[float, float]


def _figure(width: float = WIDTH, height: float = HEIGHT):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def lines(panels: Sequence[tuple[str, str, dict[str, Sequence[Point]]]], *, xlabel: str, title: str = "",
          integer_x: bool = False) -> Optional[bytes]:
    """One panel per (title, y label, {series name: [(x, y)...]}) side by side; None when nothing is finite."""
    panels = [(t, y, {n: [(a, b) for a, b in pts if _finite(a) and _finite(b)] for n, pts in series.items()})
              for t, y, series in panels]
    panels = [(t, y, {n: pts for n, pts in series.items() if pts}) for t, y, series in panels]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    fig = _figure(width=max(WIDTH, 4.2 * len(panels)))
    if title:
        fig.suptitle(title)
    for i, (panel_title, ylabel, series) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for name, pts in series.items():
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(pts) <= 30 else None, markersize=3, linewidth=1.4, label=name)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if integer_x:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if 1 < len(series) <= 12:
            ax.legend(fontsize=8)
    return _png(fig)


def bars(groups: Sequence[str], series: dict[str, Sequence[tuple[Optional[float], Optional[Sequence[float]]]]], *,
         title: str, ylabel: str, unit_range: bool = False) -> Optional[bytes]:
    """Grouped bars: for each group (x tick) one bar per series, with its (value, [low, high]) as an error bar."""
    if not groups or not series or not any(_finite(v) for vals in series.values() for v, _ in vals):
        return None
    import numpy as np

    fig = _figure(width=min(14.0, max(WIDTH, 0.9 * len(groups) * max(1, len(series)) * 0.6 + 2)))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(groups))
    width = 0.8 / len(series)
    for i, (name, vals) in enumerate(series.items()):
        heights = [v if _finite(v) else 0.0 for v, _ in vals]
        low = [max(0.0, v - ci[0]) if _finite(v) and ci and _finite(ci[0]) else 0.0 for v, ci in vals]
        high = [max(0.0, ci[1] - v) if _finite(v) and ci and _finite(ci[1]) else 0.0 for v, ci in vals]
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(x + offset, heights, width, yerr=[low, high], capsize=3, label=name, error_kw={"elinewidth": 1})
        for xi, (v, ci), up in zip(x + offset, vals, high):
            if _finite(v):  # the value above its error bar
                ax.annotate(f"{v:.3g}", (xi, v + up), ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                            textcoords="offset points")
    ax.set_xticks(x, list(groups), rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center",
                  fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    finite = [v for vals in series.values() for v, ci in vals if _finite(v)]
    if unit_range or all(0.0 <= v <= 1.0 for v in finite):
        ax.set_ylim(0, 1.08)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], *, title: str,
              unparsed: Optional[dict] = None) -> Optional[bytes]:
    """A heatmap of counts (rows: truth, columns: prediction); replies that did not parse get their own column."""
    if not matrix or not labels:
        return None
    columns = list(labels)
    rows = [list(r) for r in matrix]
    if unparsed and any(unparsed.values()):
        columns.append("unparsed")
        for label, row in zip(labels, rows):
            row.append(int(unparsed.get(label, 0)))
    fig = _figure(width=1.4 + 1.1 * len(columns), height=1.2 + 0.9 * len(labels))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(rows, cmap="Blues")
    peak = max((v for r in rows for v in r), default=0)
    for i, r in enumerate(rows):
        for j, v in enumerate(r):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if peak and v > peak / 2 else "black")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(labels)), list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _png(fig)
