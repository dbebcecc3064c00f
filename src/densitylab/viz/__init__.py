"""Figures: sample grids (and, later, density plots and the HTML report)."""

from densitylab.viz.grid import image_grid, save_grid

__all__ = ["image_grid", "save_grid"]
