"""Cached sampling for PixelCNN (masked convolutions).

Every layer's output at pixel ``(i, j)`` depends on the rows above and, in row ``i``, on columns
``<= j`` of its input only; through the stack that means on image pixels ranked before ``(i, j)``
(and, at ``(i, j)`` itself, on its earlier colour channels). So once the sampler reaches pixel
``(i, j)`` the outputs of every layer at all earlier pixels are final, and the next sub-pixel needs
one new output pixel per layer: the first ``k x k`` mask-A convolution and each block's ``3x3``
mask-B convolution read a window of their cached inputs, and the ``1x1`` layers read the current
pixel only. Per step that is a few ``(B, <= 8 * C_in)`` products per layer instead of a pass over
the whole image. Within a pixel the same position is recomputed for every colour channel, so
channel ``c`` sees the channels drawn before it.
"""

from __future__ import annotations

import torch

from densitylab.models.autoregressive.base import RasterConvModel
from densitylab.sampling.convs import ConvAt, InputCache, Pointwise, pointwise_stack
from densitylab.sampling.loop import CachedState


class PixelCNNCache(CachedState):
    """PixelCNN's cached step (``model``: a :class:`~densitylab.models.autoregressive.pixelcnn.PixelCNN`)."""

    def __init__(self, model: RasterConvModel, x: torch.Tensor, cond: torch.Tensor | None) -> None:
        super().__init__(model, x, cond)
        _, height, width = model.shape
        like = self.like
        self.image = InputCache.for_conv(model.input_conv, like, height, width)
        self.first = ConvAt(model.input_conv, self.image)
        self.blocks = [
            (Pointwise(block.reduce),
             ConvAt(block.conv, InputCache.for_conv(block.conv, like, height, width)),
             Pointwise(block.expand))
            for block in model.blocks
        ]
        n_biases = len(model.blocks) + 1
        self.biases = ([embed(cond).flatten(1) for embed in model.label_biases]
                       if model.label_biases is not None and cond is not None else [None] * n_biases)
        self.output = pointwise_stack(model.output)
        self.row = -1

    def _refresh_image(self, i: int, j: int) -> None:
        """Copy the drawn values the first layer reads: row ``i - 1`` when a row starts (its last
        sub-pixel was drawn after it was last copied), and pixels ``j - 1, j`` of row ``i``."""
        scale = self.model.scale_input
        if i != self.row:
            if i > 0:
                self.image.write_row(i - 1, scale(self.x[:, :, i - 1]))
            self.row = i
        start = max(j - 1, 0)
        self.image.write_row(i, scale(self.x[:, :, i, start : j + 1]), start)

    def params(self, c: int, i: int, j: int) -> torch.Tensor:
        self._refresh_image(i, j)
        h = self.first.at(i, j)
        if self.biases[0] is not None:
            h = h + self.biases[0]
        for (reduce, conv, expand), bias in zip(self.blocks, self.biases[1:], strict=True):
            a = reduce(torch.relu(h if bias is None else h + bias))
            conv.cache.write(i, j, torch.relu(a))
            h = h + expand(torch.relu(conv.at(i, j)))
        out = self.output(h)
        return out.view(len(out), self.model.shape[0], -1)[:, c]
