"""Image grids of integer samples, written as PNG with Pillow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from densitylab.train.files import atomic_write


def image_grid(images: torch.Tensor, levels: int, nrow: int | None = None, pad: int = 2,
               scale: int = 1) -> np.ndarray:
    """Tile ``(N, C, H, W)`` integers in ``{0..levels-1}`` into one uint8 image (H, W[, 3])."""
    images = images.detach().cpu().long()
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    pixels = (images.float() * (255.0 / max(levels - 1, 1))).round().clamp(0, 255).to(torch.uint8)
    grid = torch.full((c, ncol * (h + pad) + pad, nrow * (w + pad) + pad), 128, dtype=torch.uint8)
    for k in range(n):
        row, col = divmod(k, nrow)
        top, left = pad + row * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = pixels[k]
    array = grid.permute(1, 2, 0).numpy()
    if scale > 1:
        array = array.repeat(scale, 0).repeat(scale, 1)
    return array[..., 0] if c == 1 else array


def save_grid(path: str | Path, images: torch.Tensor, levels: int, nrow: int | None = None,
              scale: int | None = None) -> Path:
    """Write a PNG grid (atomically); small images are scaled up to stay visible."""
    from PIL import Image

    if scale is None:
        scale = max(1, 56 // images.shape[-1])
    array = image_grid(images, levels, nrow, scale=scale)
    path = Path(path)
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
    return path
