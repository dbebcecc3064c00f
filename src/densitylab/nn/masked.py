"""Masked convolutions for raster-scan autoregressive image models (PixelCNN).

The mask of a ``k x k`` kernel keeps the rows above the centre and the pixels to the left of it
in the centre row. The rows below the centre are never used, so the kernel is stored cropped to
``(k // 2 + 1) x k`` and the input is padded on top only: a third fewer multiply-adds for a
``3x3`` kernel, and nearly half for ``7x7``.

At the centre pixel, channels are split into ``n_colors`` ordered groups (R, G, B): output
group ``j`` sees input group ``i`` when ``i < j`` (mask ``A``, first layer, so a pixel never
sees itself) or ``i <= j`` (mask ``B``, later layers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def channel_groups(n_channels: int, n_colors: int) -> torch.Tensor:
    """Colour group of each channel: contiguous blocks, ``n_channels / n_colors`` wide."""
    if n_channels % n_colors:
        raise ValueError(f"{n_channels} channels cannot be split into {n_colors} colour groups")
    return torch.arange(n_channels) * n_colors // n_channels


def autoregressive_mask(
    in_channels: int, out_channels: int, kernel_size: int, mask_type: str, n_colors: int = 1
) -> torch.Tensor:
    """The ``(out, in, k // 2 + 1, k)`` 0/1 mask (rows up to the centre) of type ``A`` or ``B``."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    centre = kernel_size // 2
    mask = torch.ones(out_channels, in_channels, centre + 1, kernel_size)
    mask[:, :, centre, centre:] = 0
    group_in = channel_groups(in_channels, n_colors)
    group_out = channel_groups(out_channels, n_colors)
    if mask_type == "A":
        allowed = group_out[:, None] > group_in[None, :]
    else:
        allowed = group_out[:, None] >= group_in[None, :]
    mask[:, :, centre, centre] = allowed.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A same-size ``Conv2d`` over the rows above and the current row, with a masked weight."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        mask_type: str,
        n_colors: int = 1,
        bias: bool = True,
    ) -> None:
        rows = kernel_size // 2 + 1
        super().__init__(in_channels, out_channels, (rows, kernel_size), padding=0, bias=bias)
        self.pad = (kernel_size // 2, kernel_size // 2, kernel_size // 2, 0)  # left right top bottom
        self.register_buffer(
            "mask", autoregressive_mask(in_channels, out_channels, kernel_size, mask_type, n_colors)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == (1, 1):
            return F.conv2d(x, self.weight * self.mask, self.bias)
        return F.conv2d(F.pad(x, self.pad), self.weight * self.mask, self.bias)


def group_mask(group_out: torch.Tensor, group_in: torch.Tensor, mask_type: str) -> torch.Tensor:
    """``(out, in)`` 0/1 matrix: output group ``j`` may read input group ``i`` when ``i < j``
    (``A``) or ``i <= j`` (``B``)."""
    if mask_type == "A":
        return (group_out[:, None] > group_in[None, :]).float()
    if mask_type == "B":
        return (group_out[:, None] >= group_in[None, :]).float()
    raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")


class VerticalConv(nn.Conv2d):
    """Gated PixelCNN's vertical stack: a ``(k // 2 + 1) x k`` filter over the current row and the
    ``k // 2`` rows above. It sees pixels to the right in the current row, so the horizontal
    stack must only read it shifted down by one row (:func:`down_shift`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel sizes must be odd and >= 3, got {kernel_size}")
        half = kernel_size // 2
        super().__init__(in_channels, out_channels, (half + 1, kernel_size))
        self.pad = (half, half, half, 0)  # left right top bottom: output row r <- rows r-half..r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every row one down (a zero row on top): row ``r`` then holds what row ``r - 1`` had."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


class HorizontalConv(nn.Conv2d):
    """Gated PixelCNN's horizontal stack: a ``1 x (k // 2 + 1)`` filter over the pixels to the
    left and the current one; at the current pixel, channel groups are masked (``A``/``B``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 group_in: torch.Tensor, group_out: torch.Tensor, mask_type: str) -> None:
        half = kernel_size // 2
        super().__init__(in_channels, out_channels, (1, half + 1))
        self.pad = (half, 0, 0, 0)
        mask = torch.ones(out_channels, in_channels, 1, half + 1)
        mask[:, :, 0, half] = group_mask(group_out, group_in, mask_type)
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.pad), self.weight * self.mask, self.bias)


class GroupMaskedConv1x1(nn.Conv2d):
    """A ``1x1`` convolution whose output group ``j`` reads input groups ``<= j`` (mask B)."""

    def __init__(self, group_in: torch.Tensor, group_out: torch.Tensor) -> None:
        super().__init__(len(group_in), len(group_out), 1)
        self.register_buffer("mask", group_mask(group_out, group_in, "B")[:, :, None, None])
        self.masked = not bool(self.mask.all())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.mask if self.masked else self.weight
        return F.conv2d(x, weight, self.bias)
