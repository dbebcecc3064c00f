"""Image flows as models of discrete data, through uniform dequantization.

A flow gives a density ``p_Y`` on ``y in [0, 1)^D``. For integer images ``x in {0..K-1}^D`` with
``v = x + u, u ~ U[0,1)^D`` and ``y = v / K`` (Theis et al. 2016; Ho et al. 2019):

    log P(x) = log int_{[0,1)^D} p_Y((x + u) / K) K^{-D} du
             >= E_u[ log p_Y((x + u) / K) ] - D log K

``log_prob`` returns the one-sample estimate of this bound; ``log_prob_iw`` the importance-weighted
estimate ``log (1/S) sum_s p_Y((x + u_s) / K) K^{-D}``, which tightens it as ``S`` grows. A flow
whose density is uniform on ``[0, 1)^D`` scores exactly ``log2 K`` bits/dim.
"""

from __future__ import annotations

import math

import torch

from densitylab.data.transforms import uniform_dequantize
from densitylab.models.base import DensityModel


class DequantizedFlow(DensityModel):
    """Subclasses implement ``log_density(y)`` on ``[0,1)^D`` and ``sample_continuous``."""

    family = "flow"

    def log_density(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def sample_continuous(
        self,
        n: int,
        cond: torch.Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def dequantize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return uniform_dequantize(x, self.levels, generator).to(self.dtype)

    def log_prob(
        self,
        x: torch.Tensor,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        self.check_input(x)
        y = self.dequantize(x, generator)
        return self.log_density(y, cond) - self.dim * math.log(self.levels)

    def log_prob_iw(
        self,
        x: torch.Tensor,
        n_samples: int,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Importance-weighted estimate with ``n_samples`` dequantization samples per image."""
        samples = torch.stack([self.log_prob(x, cond, generator) for _ in range(n_samples)])
        return torch.logsumexp(samples, dim=0) - math.log(n_samples)

    @torch.no_grad()
    def sample(self, n, cond=None, temperature=1.0, generator=None):
        y = self.sample_continuous(n, cond, temperature, generator)
        return (y * self.levels).floor().clamp_(0, self.levels - 1).long()
