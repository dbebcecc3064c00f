"""Cached sampling for Gated PixelCNN.

The two stacks are cached differently, following what each one reads:

- the **vertical stack** at row ``r`` depends on image rows ``<= r`` (all columns), and the
  horizontal stack only reads it shifted down a row. So it is computed a whole row at a time, when
  that row of the image is complete: at the start of row ``i``, every layer's vertical output for
  row ``i - 1`` (one small convolution over its band of rows), and the ``1x1`` link into the
  horizontal stack for row ``i``. Over an image that is one pass of the vertical stack.
- the **horizontal stack** at ``(i, j)`` reads columns ``<= j`` of row ``i`` only, so each step
  computes one new pixel per layer from a window of that layer's cached input row, plus the
  link of row ``i - 1`` read at column ``j``; the residual, skip and output ``1x1`` maps act on that
  pixel alone.
"""

from __future__ import annotations

import torch
from torch import nn

from densitylab.models.autoregressive.base import RasterConvModel
from densitylab.sampling.convs import ConvAt, InputCache, Pointwise, pointwise_stack
from densitylab.sampling.loop import CachedState


def gate(x: torch.Tensor) -> torch.Tensor:
    """``tanh(a) * sigmoid(b)`` of the two halves ``a, b`` of the channels."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class CachedGatedLayer:
    """One layer's caches (``layer``: a ``GatedLayer``): its vertical and horizontal input maps and
    the current row's link."""

    def __init__(self, layer: nn.Module, like: torch.Tensor, height: int, width: int,
                 cond: torch.Tensor | None) -> None:
        self.first, self.n_out = layer.first, layer.n_out
        self.vertical = ConvAt(layer.vertical, InputCache.for_conv(layer.vertical, like, height, width))
        self.horizontal = ConvAt(layer.horizontal, InputCache.for_conv(layer.horizontal, like, height, width))
        self.link = Pointwise(layer.link)
        self.residual_and_skip = Pointwise(layer.residual_and_skip)
        labelled = cond is not None and layer.label_v is not None
        self.label_v = layer.label_v(cond)[:, :, :, 0] if labelled else None  # (B, 2V, 1)
        self.label_h = layer.label_h(cond).flatten(1) if labelled else None  # (B, 2G)
        link_of_zeros = self.link(like.new_zeros(len(like), layer.link.in_channels))  # row 0: nothing above
        self.link_row = link_of_zeros[:, :, None].expand(-1, -1, width)

    def vertical_row(self, i: int) -> torch.Tensor:
        """Vertical output row ``i`` (gated); sets the link the horizontal stack reads in row ``i + 1``."""
        pre = self.vertical.row(i)  # (B, 2V, W)
        self.link_row = self.link(pre.transpose(1, 2)).transpose(1, 2)  # (B, 2G, W)
        return gate(pre if self.label_v is None else pre + self.label_v)

    def horizontal_at(self, i: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual stream and the skip output at ``(i, j)``, both ``(B, ·)``."""
        pre = self.horizontal.at(i, j) + self.link_row[:, :, j]
        if self.label_h is not None:
            pre = pre + self.label_h
        out = self.residual_and_skip(gate(pre))
        residual, skip = out[:, : self.n_out], out[:, self.n_out :]
        if not self.first:
            residual = residual + self.horizontal.cache.at(i, j)
        return residual, skip


class GatedPixelCNNCache(CachedState):
    """Gated PixelCNN's cached step (``model``: a
    :class:`~densitylab.models.autoregressive.gated_pixelcnn.GatedPixelCNN`)."""

    def __init__(self, model: RasterConvModel, x: torch.Tensor, cond: torch.Tensor | None) -> None:
        super().__init__(model, x, cond)
        _, height, width = model.shape
        self.layers = [CachedGatedLayer(layer, self.like, height, width, cond) for layer in model.layers]
        self.output = pointwise_stack(model.output)
        self.row = -1

    def _start_row(self, i: int) -> None:
        """Row ``i - 1`` is complete: run the vertical stack over it."""
        self.row = i
        if i == 0:
            return
        v = self.model.scale_input(self.x[:, :, i - 1])
        for layer in self.layers:
            layer.vertical.cache.write_row(i - 1, v)
            v = layer.vertical_row(i - 1)

    def params(self, c: int, i: int, j: int) -> torch.Tensor:
        if i != self.row:
            self._start_row(i)
        start = max(j - 1, 0)  # pixel j - 1 had its last channel drawn after it was copied
        self.layers[0].horizontal.cache.write_row(i, self.model.scale_input(self.x[:, :, i, start : j + 1]),
                                                  start)
        skips = None
        for layer, following in zip(self.layers, self.layers[1:] + [None], strict=True):
            h, skip = layer.horizontal_at(i, j)
            if following is not None:
                following.horizontal.cache.write(i, j, h)
            skips = skip if skips is None else skips + skip
        out = self.output(skips)
        return out.view(len(out), self.model.shape[0], -1)[:, c]
