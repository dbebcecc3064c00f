"""The sampling loop shared by every autoregressive image model, and the naive step. It knows the
models only through :class:`SequentialModel`, the few methods the loop calls."""

from __future__ import annotations

from typing import Protocol

import torch
from tqdm.auto import tqdm

METHODS = ("cached", "naive")


class SequentialModel(Protocol):
    """What the loop and the steps use of a model (see ``models/autoregressive/base.py``)."""

    shape: tuple[int, ...]
    device: torch.device

    def order_rank(self) -> torch.Tensor: ...

    def scale_input(self, x: torch.Tensor) -> torch.Tensor: ...

    def output_weight(self) -> torch.Tensor: ...

    def params_from_input(self, inputs: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor: ...

    def draw(self, params: torch.Tensor, temperature: float,
             generator: torch.Generator | None) -> torch.Tensor: ...


class StepState:
    """Computes the parameters of one sub-pixel from the image drawn so far.

    ``x`` is the ``(B, C, H, W)`` long tensor that the loop fills in place; :meth:`params` is called
    once per sub-pixel in the model's order, and may read any value of ``x`` ranked before the
    sub-pixel ``(c, i, j)`` it is asked about. States that cache activations rely on being called
    in that order."""

    def __init__(self, model: SequentialModel, x: torch.Tensor, cond: torch.Tensor | None) -> None:
        self.model, self.x, self.cond = model, x, cond

    def params(self, c: int, i: int, j: int) -> torch.Tensor:
        """``(B, P)``: the head's parameters of sub-pixel ``(c, i, j)``."""
        raise NotImplementedError


class CachedState(StepState):
    """Base of the cached steps: they assume raster order with the channels innermost, and allocate
    their caches like ``self.like``, an empty ``(B, 0)`` tensor of the model's float dtype and
    device."""

    def __init__(self, model: SequentialModel, x: torch.Tensor, cond: torch.Tensor | None) -> None:
        super().__init__(model, x, cond)
        check_raster_order(model)
        self.like = x.new_zeros(len(x), 0, dtype=model.output_weight().dtype)


class FullPass(StepState):
    """The naive step: the whole network over the whole image, for one sub-pixel's parameters."""

    def params(self, c: int, i: int, j: int) -> torch.Tensor:
        model = self.model
        return model.params_from_input(model.scale_input(self.x), self.cond)[:, c, :, i, j]


def sample_in_order(
    model: SequentialModel,
    n: int,
    cond: torch.Tensor | None,
    state_type: type[StepState],
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Draw ``n`` images sub-pixel by sub-pixel in ``model.order_rank()`` order; ``(n, C, H, W)`` long.

    ``progress`` shows a bar over the sub-pixels on stderr."""
    x = torch.zeros(n, *model.shape, dtype=torch.long, device=model.device)
    if n == 0:
        return x
    state = state_type(model, x, cond)
    order = model.order_rank().flatten().argsort()
    positions = torch.nonzero(torch.ones(model.shape))[order].tolist()
    for c, i, j in tqdm(positions, disable=not progress, unit="sub-pixel", desc="sampling",
                        mininterval=0.5, leave=False):
        x[:, c, i, j] = model.draw(state.params(c, i, j), temperature, generator)
    return x


def raster_step(shape: tuple[int, ...], c: int, i: int, j: int) -> int:
    """Index of sub-pixel ``(c, i, j)`` in raster order with the channels innermost."""
    channels, _, width = shape
    return (i * width + j) * channels + c


def previous_input(model: SequentialModel, x: torch.Tensor, t: int) -> torch.Tensor:
    """``(B, 1)``: sub-pixel ``t - 1`` of ``x`` in raster order, scaled as the model's input
    (zero for ``t = 0``) — what a sequence model reads at step ``t``."""
    if t == 0:
        return x.new_zeros(len(x), 1, dtype=model.output_weight().dtype)
    channels, _, width = model.shape
    c, pixel = (t - 1) % channels, (t - 1) // channels
    return model.scale_input(x[:, c, pixel // width, pixel % width]).unsqueeze(1)


def raster_rank(shape: tuple[int, ...]) -> torch.Tensor:
    """Rank of each sub-pixel ``(C, H, W)`` in raster order with the channels innermost (the order
    every cached state assumes)."""
    c, h, w = shape
    return torch.arange(c * h * w).view(h, w, c).permute(2, 0, 1)


def check_raster_order(model: SequentialModel) -> None:
    if not torch.equal(model.order_rank(), raster_rank(model.shape)):
        raise ValueError(f"{type(model).__name__}: cached sampling assumes raster order with the "
                         "colour channels innermost")
