"""The multi-scale architecture of RealNVP and Glow (Dinh et al. 2017, section 3.6): factor out.

A list of stages ``f_1 .. f_L`` maps an image ``(B, C, H, W)`` to noise; after each stage but the
last, the last ``factored[k]`` channels of its output leave the flow ("factored out") and go
straight to the latent, and only the rest enters the next stage:

    (h_k, z_k) = split(f_k(h_{k-1})),    z = concat(flat(z_1), ..., flat(z_{L-1}), flat(f_L(h_{L-1})))

so ``log|det|`` is the sum of the stages' log-determinants and the output is a flat ``(B, D)``.
The stages hold the squeezes (``(C, H, W) -> (4C, H/2, W/2)``), so later stages work on fewer,
coarser dimensions. RealNVP's and Glow's constructors differ only in what the stages contain.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from densitylab.models.flows.transforms import Transform


class MultiScale(Transform):
    """Stages with factor-out: ``(B, C, H, W)`` -> flat ``(B, D)``.

    ``out_shapes[k]`` is the ``(C, H, W)`` of the part that leaves after stage ``k`` (the last
    entry: the last stage's whole output); pass the stages and those shapes."""

    def __init__(self, stages: list[Transform], out_shapes: list[tuple[int, int, int]]) -> None:
        super().__init__()
        if len(stages) != len(out_shapes) or not stages:
            raise ValueError("a multi-scale transform needs one output shape per stage")
        self.stages = nn.ModuleList(stages)
        self.out_shapes = [tuple(s) for s in out_shapes]

    def forward(self, x, cond=None):
        h, total, outputs = x, x.new_zeros(x.shape[0]), []
        for k, stage in enumerate(self.stages):
            h, logabsdet = stage(h, cond)
            total = total + logabsdet
            if k < len(self.stages) - 1:
                keep = h.shape[1] - self.out_shapes[k][0]
                outputs.append(h[:, keep:].flatten(1))
                h = h[:, :keep]
        outputs.append(h.flatten(1))
        return torch.cat(outputs, 1), total

    def _pieces(self, z: torch.Tensor) -> list[torch.Tensor]:
        sizes = [math.prod(s) for s in self.out_shapes]
        return [p.reshape(-1, *s) for p, s in zip(z.flatten(1).split(sizes, 1), self.out_shapes, strict=True)]

    def inverse(self, z, cond=None):
        pieces = self._pieces(z)
        h, total = pieces[-1], z.new_zeros(z.shape[0])
        for k in reversed(range(len(self.stages))):
            if k < len(self.stages) - 1:
                h = torch.cat([h, pieces[k]], 1)
            h, logabsdet = self.stages[k].inverse(h, cond)
            total = total + logabsdet
        return h, total

    def invert(self, z, cond=None):
        pieces = self._pieces(z)
        h = pieces[-1]
        for k in reversed(range(len(self.stages))):
            if k < len(self.stages) - 1:
                h = torch.cat([h, pieces[k]], 1)
            h = self.stages[k].invert(h, cond)
        return h
