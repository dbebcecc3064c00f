"""Dequantization: from integer data ``x in {0..K-1}^D`` to continuous ``y in [0, 1)^D``.

A dequantizer returns ``(y, log_q)`` with ``y = (x + u) / K`` and ``log_q = log q(u | x)`` per
example. For any such ``q`` on ``[0, 1)^D`` (Theis et al. 2016; Ho et al. 2019, "Flow++"):

    log P(x) >= E_{u ~ q}[ log p_Y((x + u) / K) - D log K - log q(u | x) ]

- ``uniform``: ``u ~ U[0, 1)^D`` and ``log_q = 0`` (the default).
- ``variational``: ``u = sigmoid(e)`` with ``e`` drawn from a flow conditioned on ``x``
  (see ``variational_dequantization.py``), trained jointly with the model; the bound tightens
  as ``q`` approaches the model's posterior over ``u``.
"""

from __future__ import annotations

import torch
from torch import nn

from densitylab.data.transforms import uniform_dequantize

DEQUANTIZATIONS = ("uniform", "variational")


class UniformDequantizer(nn.Module):
    """``u ~ U[0, 1)^D``, ``log q(u|x) = 0``."""

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = levels

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y = uniform_dequantize(x, self.levels, generator).to(dtype)
        return y, y.new_zeros(x.shape[0])


def make_dequantizer(kind: str, shape: tuple[int, ...], levels: int, hidden: int = 32) -> nn.Module:
    """The dequantizer named ``kind`` for data of ``shape`` with ``levels`` values."""
    if kind == "uniform":
        return UniformDequantizer(levels)
    if kind == "variational":
        from densitylab.models.flows.variational_dequantization import VariationalDequantizer

        return VariationalDequantizer(shape, levels, hidden)
    raise ValueError(f"dequantization must be one of {', '.join(DEQUANTIZATIONS)}, got {kind!r}")
