"""Plots of vector samples (the 1D and 2D toys): a histogram for 1D data, a 2D histogram for 2D."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from densitylab.viz.figures import save_png


def save_points_plot(path: str | Path, samples: torch.Tensor, title: str = "samples",
                     levels: int = 0, reference: torch.Tensor | None = None) -> Path:
    """Write a PNG of ``samples`` ``(N, D)``: a histogram (D = 1, one bin per level for discrete
    data) or a 2D histogram (D = 2; further dimensions are dropped), next to ``reference`` data
    when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("data", reference), (title, samples)] if reference is not None else [(title, samples)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    values = [v.detach().double().cpu().numpy().reshape(len(v), -1) for _, v in panels]
    everything = np.concatenate(values)
    low, high = np.percentile(everything, [0.5, 99.5], axis=0)
    for ax, (name, _), array in zip(axes[0], panels, values, strict=True):
        if array.shape[1] == 1:
            bins = np.arange(levels + 1) - 0.5 if levels else np.linspace(low[0], high[0], 80)
            ax.hist(array[:, 0], bins=bins, density=True, color="tab:blue")
        else:
            ax.hist2d(array[:, 0], array[:, 1], bins=100,
                      range=[[low[0], high[0]], [low[1], high[1]]], cmap="viridis")
            ax.set_aspect("equal")
        ax.set_title(name)
    fig.tight_layout()
    path = Path(path)
    save_png(fig, path, dpi=80)
    return path
