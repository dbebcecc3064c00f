"""Line plots of training curves and measurements, written as PNG with matplotlib (Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from densitylab.viz.figures import save_png


def save_line_plot(path: str | Path, series: dict[str, Sequence[Sequence[float]]], xlabel: str,
                   ylabel: str, title: str = "", logx: bool = False, logy: bool = False) -> Path:
    """One line per ``label -> [[x, y], ...]`` (points after the first two numbers are ignored);
    written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, points in series.items():
        if len(points):
            xs, ys = zip(*((p[0], p[1]) for p in points), strict=True)
            ax.plot(xs, ys, label=label, marker="o" if len(points) < 12 else None, markersize=3)
    return finish_plot(fig, ax, path, xlabel, ylabel, title, logx, logy)


def finish_plot(fig, ax, path: str | Path, xlabel: str, ylabel: str, title: str = "",
                logx: bool = False, logy: bool = False) -> Path:
    """Label, scale and title ``ax``, add a grid and a legend (when it has labels), and write
    ``fig`` to ``path`` as PNG atomically; closes the figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    save_png(fig, path, dpi=110)
    return path
