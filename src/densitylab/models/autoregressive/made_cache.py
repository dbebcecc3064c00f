"""MADE's samplers: the network evaluated for one sub-pixel at each step, naively or from caches.

Both serve one mask set and some rows of the batch (the images that drew that set) and give, at
step ``t``, the logits of the ``t``-th sub-pixel in the set's order from the values drawn so far:

- :class:`MADEPass` (``naive``): the hidden layers over the whole image, then the output rows of
  that sub-pixel; ``D`` passes of the hidden layers per image;
- :class:`MADECache` (``cached``): the masked MLP evaluated incrementally
  (:class:`~densitylab.nn.made_steps.MaskedMLPSteps`): each hidden unit is computed once, at the
  step where the last input it reads is drawn, so the whole image costs one pass.
"""

from __future__ import annotations

from typing import Any

import torch


class MADEPass:
    """The naive step of mask set ``mask`` over ``rows`` of ``x`` (``None``: all of them); ``x``
    is the ``(B, C, H, W)`` long tensor the sampler fills in place."""

    def __init__(self, model: Any, x: torch.Tensor, cond: torch.Tensor | None, mask: int,
                 rows: torch.Tensor | None) -> None:
        self.model, self.x, self.mask, self.rows = model, x, mask, rows
        self.cond = cond if cond is None or rows is None else cond[rows]
        self.order = model.sample_order[mask].tolist()

    def params_at(self, step: int) -> torch.Tensor:
        """``(b, K)``: the logits of the ``step``-th sub-pixel in the set's order."""
        model = self.model
        x = self.x if self.rows is None else self.x[self.rows]
        return model.dimension_params(model.scale_input(x), self.cond, self.mask, self.order[step])


class MADECache(MADEPass):
    """The cached step: must be called for steps ``0, 1, ..., D - 1`` in turn."""

    def __init__(self, model: Any, x: torch.Tensor, cond: torch.Tensor | None, mask: int,
                 rows: torch.Tensor | None) -> None:
        super().__init__(model, x, cond, mask, rows)
        self.flat = x.view(len(x), -1)
        self.steps = model.masked_steps(mask, len(x) if rows is None else len(rows), self.cond)

    def params_at(self, step: int) -> torch.Tensor:
        if step > 0:  # the value drawn at the previous step is the next input
            previous = self.order[step - 1]
            values = self.flat[:, previous] if self.rows is None else self.flat[self.rows, previous]
            self.steps.inputs[step - 1] = self.model.scale_input(values)
        return self.model.position_logits(self.steps.step(step).t(), self.order[step])
