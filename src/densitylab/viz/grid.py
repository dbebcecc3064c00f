"""Image grids of integer samples, written as PNG with Pillow.

The padding between images is a colour no pixel of the grid has (blue for grey images, and for
colour images the first of a few candidates that none of the images uses), so a grey pixel never
blends into the frame. Rows can carry labels (the class of a class-conditional grid), drawn in a
margin on the left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from densitylab.train.files import atomic_write

PAD_COLOURS = ((40, 90, 200), (220, 40, 160), (0, 170, 90), (250, 190, 0))
LABEL_BACKGROUND = (255, 255, 255)


def pad_colour(pixels: torch.Tensor) -> tuple[int, int, int]:
    """A colour none of the ``(N, C, H, W)`` uint8 ``pixels`` has (grey images: any colour)."""
    if pixels.shape[1] != 3:
        return PAD_COLOURS[0]
    used = pixels.permute(0, 2, 3, 1).reshape(-1, 3).to(torch.int64)
    codes = set((used[:, 0] * 65536 + used[:, 1] * 256 + used[:, 2]).unique().tolist())
    for colour in PAD_COLOURS:
        if colour[0] * 65536 + colour[1] * 256 + colour[2] not in codes:
            return colour
    for code in range(256**3):  # every candidate in use: the first unused colour
        if code not in codes:
            return (code // 65536, code // 256 % 256, code % 256)
    return PAD_COLOURS[0]


def image_grid(images: torch.Tensor, levels: int, nrow: int | None = None, pad: int = 2,
               scale: int = 1) -> np.ndarray:
    """Tile ``(N, C, H, W)`` integers in ``{0..levels-1}`` into one RGB uint8 image (H, W, 3),
    ``nrow`` images per row, framed by :func:`pad_colour`."""
    images = images.detach().cpu().long()
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    pixels = (images.float() * (255.0 / max(levels - 1, 1))).round().clamp(0, 255).to(torch.uint8)
    colour = torch.tensor(pad_colour(pixels), dtype=torch.uint8).view(3, 1, 1)
    grid = colour.expand(3, ncol * (h + pad) + pad, nrow * (w + pad) + pad).clone()
    for k in range(n):
        row, col = divmod(k, nrow)
        top, left = pad + row * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = pixels[k].expand(3, h, w)
    array = grid.permute(1, 2, 0).numpy()
    if scale > 1:
        array = array.repeat(scale, 0).repeat(scale, 1)
    return np.ascontiguousarray(array)


def label_rows(array: np.ndarray, labels: Sequence[str], row_height: int, top: int = 0):
    """The grid ``array`` with a white margin on the left holding ``labels[r]`` beside row ``r``."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    draw_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(draw_probe.textbbox((0, 0), text, font=font)[2] for text in labels) + 8
    image = Image.new("RGB", (array.shape[1] + width, array.shape[0]), LABEL_BACKGROUND)
    image.paste(Image.fromarray(array), (width, 0))
    draw = ImageDraw.Draw(image)
    for row, text in enumerate(labels):
        box = draw.textbbox((0, 0), text, font=font)
        y = top + row * row_height + (row_height - (box[3] - box[1])) // 2 - box[1]
        draw.text((width - 4 - (box[2] - box[0]), y), text, fill=(0, 0, 0), font=font)
    return image


def save_grid(path: str | Path, images: torch.Tensor, levels: int, nrow: int | None = None,
              scale: int | None = None, row_labels: Sequence[str] | None = None) -> Path:
    """Write a PNG grid (atomically); small images are scaled up to stay visible. ``row_labels``:
    one label per row of the grid (e.g. ``class 3``), drawn to its left."""
    from PIL import Image

    if scale is None:
        scale = max(1, 56 // images.shape[-1])
    pad = 2
    array = image_grid(images, levels, nrow, pad=pad, scale=scale)
    if row_labels is not None:
        image = label_rows(array, list(row_labels), (images.shape[-2] + pad) * scale, pad * scale // 2)
    else:
        image = Image.fromarray(array)
    path = Path(path)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path
