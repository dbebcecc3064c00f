"""Cached sampling for WaveNet ("fast WaveNet", Paine et al. 2016).

Each dilated causal layer at step ``t`` reads its input at ``t`` and ``t - d``. The state keeps every
layer's inputs so far (a history of ``D`` steps; a queue of the last ``d`` would do, but the
history makes the indexing plain and costs ``B x R x D`` floats per layer), and each step pushes one
new input through the stack: one kernel-2 product, a gate, and the residual and skip ``1x1`` maps
per layer, instead of a pass over the whole sequence.
"""

from __future__ import annotations

import torch

from densitylab.models.autoregressive.base import AutoregressiveImageModel
from densitylab.sampling.convs import Pointwise, pointwise_stack
from densitylab.sampling.loop import CachedState, previous_input, raster_step


class WaveNetCache(CachedState):
    """WaveNet's cached step (``model``: a :class:`~densitylab.models.autoregressive.wavenet.WaveNet`)."""

    def __init__(self, model: AutoregressiveImageModel, x: torch.Tensor, cond: torch.Tensor | None) -> None:
        super().__init__(model, x, cond)
        n, dtype = len(x), self.like.dtype
        self.input = Pointwise(model.input_conv)
        self.layers = [(layer, Pointwise(layer.residual), Pointwise(layer.skip)) for layer in model.layers]
        self.histories = [x.new_zeros(n, model.config.residual_channels, model.dim, dtype=dtype)
                          for _ in model.layers]
        self.positions = model.positions.to(dtype)
        self.output = pointwise_stack(model.output)

    def params(self, c: int, i: int, j: int) -> torch.Tensor:
        x = self.x
        t = raster_step(self.model.shape, c, i, j)
        previous = previous_input(self.model, x, t)
        h = self.input(torch.cat([previous, self.positions[:, t].expand(len(x), -1)], dim=1))
        skips = None
        for (layer, residual, skip), history in zip(self.layers, self.histories, strict=True):
            history[:, :, t] = h
            u = layer.gated(layer.conv.step(history, t), self.cond)
            h = h + residual(u)
            skips = skip(u) if skips is None else skips + skip(u)
        return self.output(skips)
