"""Cached sampling for the pixel RNN: the recurrent state is the cache.

Step ``t`` feeds the value drawn at ``t - 1`` (and the position features) through the same
recurrent module, carrying its hidden state, instead of running it over the whole sequence.
"""

from __future__ import annotations

import torch

from densitylab.models.autoregressive.base import AutoregressiveImageModel
from densitylab.sampling.loop import CachedState, previous_input, raster_step


class RecurrentCache(CachedState):
    """The pixel RNN's cached step (``model``: a :class:`~densitylab.models.autoregressive.rnn.PixelRNN`)."""

    def __init__(self, model: AutoregressiveImageModel, x: torch.Tensor, cond: torch.Tensor | None) -> None:
        super().__init__(model, x, cond)
        self.state = None

    def params(self, c: int, i: int, j: int) -> torch.Tensor:
        model = self.model
        t = raster_step(model.shape, c, i, j)
        step = slice(t, t + 1)
        inputs = model.step_inputs(previous_input(model, self.x, t), step, self.cond)
        hidden, self.state = model.rnn(inputs, self.state)
        return model.logits(hidden, step)[:, 0]
