"""An exponential moving average of a model's parameters, for evaluation, samples and the saved
model (Polyak averaging; the schedule of the decay as in TensorFlow's ``ExponentialMovingAverage``).

After optimizer step ``t`` (counting from 1) every parameter's average moves towards it:

    average <- d_t * average + (1 - d_t) * parameter,   d_t = min(decay, (1 + t) / (10 + t))

so that the first steps, whose weights are far from any good ones, are forgotten quickly. Training
keeps updating the live parameters; the average is only read. Buffers (masks, ActNorm's
``initialized`` flag, a fitted standardisation) are not averaged: they are not trained by
gradients, and the live model's are the right ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from densitylab.errors import DensitylabError

PREFIX = "average."  # the averaged parameters' names in a checkpoint


class WeightAverage:
    """The moving average of ``model``'s parameters with the given ``decay`` (in ``(0, 1)``)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise DensitylabError(f"the weight average's decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.names = [name for name, _ in model.named_parameters()]
        self.values = [p.detach().clone() for p in model.parameters()]

    def decay_at(self, step: int) -> float:
        """``d_t`` after optimizer step ``step`` (1 for the first)."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards ``model``'s parameters after optimizer step ``step``."""
        weight = 1.0 - self.decay_at(step)
        for average, parameter in zip(self.values, model.parameters(), strict=True):
            average.lerp_(parameter.detach(), weight)

    @torch.no_grad()
    def _swap(self, model: nn.Module) -> None:
        for average, parameter in zip(self.values, model.parameters(), strict=True):
            live = parameter.detach().clone()
            parameter.copy_(average)
            average.copy_(live)

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """Inside the block ``model`` holds the averaged parameters; its own come back after."""
        self._swap(model)
        try:
            yield
        finally:
            self._swap(model)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Give ``model`` the averaged parameters for good (training is over)."""
        for average, parameter in zip(self.values, model.parameters(), strict=True):
            parameter.copy_(average)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The averaged parameters, named for a checkpoint."""
        return {PREFIX + name: value for name, value in zip(self.names, self.values, strict=True)}

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, torch.Tensor], path: Path | str) -> bool:
        """Take the averaged parameters from a checkpoint's ``tensors``; ``False`` (and the average
        left as it is) when the checkpoint holds none (it was trained without an average)."""
        saved = {k.removeprefix(PREFIX): v for k, v in tensors.items() if k.startswith(PREFIX)}
        if not saved:
            return False
        for name, value in zip(self.names, self.values, strict=True):
            got = saved.get(name)
            if got is None or got.shape != value.shape or not got.dtype.is_floating_point:
                found = "lacks it" if got is None else f"holds shape {tuple(got.shape)}, {got.dtype}"
                raise DensitylabError(f"{path}: the weight average of parameter {name} does not fit "
                                      f"the model (the file {found}); retrain with --force")
            value.copy_(got)
        return True
