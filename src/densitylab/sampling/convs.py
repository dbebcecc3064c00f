"""Convolutions evaluated at one output position, from cached inputs.

A cached sampler keeps, for every convolution that looks at neighbouring pixels, its whole input
map with the layer's zero padding around it (:class:`InputCache`), writes each input pixel once it
is known, and evaluates the convolution only at the output pixel the next sub-pixel needs
(:class:`ConvAt`): one ``(B, C_in * kh * kw) @ (C_in * kh * kw, C_out)`` product. ``1x1``
convolutions become plain matrix products (:class:`Pointwise`). Masks are folded into the weights
once, when the sampler starts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def effective_weight(conv: nn.Conv2d | nn.Conv1d) -> torch.Tensor:
    """The weight a (possibly masked) convolution applies: ``weight * mask`` where it has a mask."""
    mask = getattr(conv, "mask", None)
    return conv.weight if mask is None else conv.weight * mask


class InputCache:
    """A layer's input map inside zero padding ``(left, right, top)`` (no padding below: the causal
    layers never look down), stored channels-last, ``(B, H + top, W + left + right, C)``, so that a
    kernel row's window is one contiguous block per image and is read without a copy."""

    def __init__(self, like: torch.Tensor, channels: int, height: int, width: int,
                 pad: tuple[int, int, int] = (0, 0, 0)) -> None:
        left, right, top = pad
        self.left, self.top = left, top
        self.data = like.new_zeros(like.shape[0], height + top, width + left + right, channels)

    @classmethod
    def for_conv(cls, conv: nn.Conv2d, like: torch.Tensor, height: int, width: int) -> InputCache:
        """Sized for ``conv``, whose ``pad`` attribute is ``(left, right, top, bottom)``."""
        left, right, top, _ = getattr(conv, "pad", (0, 0, 0, 0))
        return cls(like, conv.in_channels, height, width, (left, right, top))

    def write(self, i: int, j: int, value: torch.Tensor) -> None:
        """Pixel ``(i, j)`` of the map := ``value (B, C)``."""
        self.data[:, i + self.top, j + self.left] = value

    def write_row(self, i: int, values: torch.Tensor, start: int = 0) -> None:
        """Row ``i``, columns ``start ..`` := ``values (B, C, W')``."""
        begin = start + self.left
        self.data[:, i + self.top, begin : begin + values.shape[-1]] = values.transpose(1, 2)

    def at(self, i: int, j: int) -> torch.Tensor:
        """The stored pixel ``(i, j)``, ``(B, C)``."""
        return self.data[:, i + self.top, j + self.left]

    def window_row(self, row: int, j: int, cols: int) -> torch.Tensor:
        """``(B, cols * C)``: padded row ``row``, padded columns ``j .. j + cols - 1`` (a view)."""
        return self.data[:, row, j : j + cols].flatten(1)

    def band(self, i: int, rows: int) -> torch.Tensor:
        """``(B, C, rows, W + left + right)``: the padded rows ``i ..`` feeding output row ``i``."""
        return self.data[:, i : i + rows].permute(0, 3, 1, 2)


class ConvAt:
    """A 2D convolution over the rows above and the current row, evaluated at one output pixel
    from an :class:`InputCache`: one matrix product per kernel row."""

    def __init__(self, conv: nn.Conv2d, cache: InputCache) -> None:
        self.rows, self.cols = conv.kernel_size
        if cache.top != self.rows - 1:
            raise ValueError("the cache's top padding must be the kernel's rows above")
        weight = effective_weight(conv)  # (out, in, rows, cols)
        self.conv_weight = weight
        self.row_weights = [weight[:, :, r].permute(2, 1, 0).reshape(-1, weight.shape[0])
                            for r in range(self.rows)]  # (cols * in, out), matching window_row
        self.bias = conv.bias
        self.cache = cache

    def at(self, i: int, j: int) -> torch.Tensor:
        """``(B, C_out)``: the output pixel ``(i, j)`` (its window's top-left corner is the padded
        ``(i, j)``)."""
        out = None
        for r, weight in enumerate(self.row_weights):
            term = self.cache.window_row(i + r, j, self.cols) @ weight
            out = term if out is None else out + term
        return out if self.bias is None else out + self.bias

    def row(self, i: int) -> torch.Tensor:
        """``(B, C_out, W)``: the whole output row ``i`` (one small convolution over its band)."""
        return F.conv2d(self.cache.band(i, self.rows), self.conv_weight, self.bias)[:, :, 0]


class Pointwise:
    """A ``1x1`` convolution (masked or not) as a matrix product on ``(B, C_in)`` vectors."""

    def __init__(self, conv: nn.Conv2d | nn.Conv1d) -> None:
        weight = effective_weight(conv)
        self.weight = weight.reshape(weight.shape[0], -1).T.contiguous()
        self.bias = conv.bias

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        out = v @ self.weight
        return out if self.bias is None else out + self.bias


def pointwise_stack(stack: nn.Sequential):
    """An ``nn.Sequential`` of ReLUs and ``1x1`` convolutions as a function of ``(B, C_in)``."""
    for module in stack:
        if not isinstance(module, nn.ReLU) and getattr(module, "kernel_size", None) not in ((1,), (1, 1)):
            raise TypeError(f"not a ReLU or a 1x1 convolution: {module}")
    steps = [torch.relu if isinstance(m, nn.ReLU) else Pointwise(m) for m in stack]

    def run(v: torch.Tensor) -> torch.Tensor:
        for step in steps:
            v = step(v)
        return v

    return run
