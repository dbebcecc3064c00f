"""Flows as models of discrete data through dequantization, and of continuous data directly.

A flow gives a density ``p_Y`` on continuous values. For integer data ``x in {0..K-1}^D``, a
dequantizer (``dequantization.py``) draws ``y = (x + u) / K`` in ``[0, 1)^D`` with density
``q(u | x)`` (uniform by default), and (Theis et al. 2016; Ho et al. 2019):

    log P(x) = log E_{u ~ q}[ p_Y((x + u) / K) K^{-D} / q(u | x) ]
             >= E_{u ~ q}[ log p_Y((x + u) / K) - D log K - log q(u | x) ]

``log_prob`` returns the one-sample estimate of this bound; ``log_prob_iw`` the importance-weighted
estimate ``log (1/S) sum_s p_Y(y_s) K^{-D} / q(u_s | x)``, which tightens it as ``S`` grows. A flow
whose density is uniform on ``[0, 1)^D`` scores exactly ``log2 K`` bits/dim.

For continuous data (``levels == 0``: the 1D and 2D toys) ``log_prob`` is ``log p_Y(x)`` itself, a
density in nats, and ``sample`` returns real values.
"""

from __future__ import annotations

import copy
import math

import torch

from densitylab.errors import DensitylabError
from densitylab.models.base import DensityModel
from densitylab.models.flows.dequantization import UniformDequantizer, make_dequantizer


class DequantizedFlow(DensityModel):
    """Subclasses implement ``log_density(y)`` and ``sample_continuous``; ``y`` lies in
    ``[0, 1)^D`` for discrete data and is the data itself for continuous data."""

    family = "flow"

    def __init__(self, shape: tuple[int, ...], levels: int) -> None:
        super().__init__(shape, levels)
        self.dequantizer = UniformDequantizer(levels)

    def set_dequantization(self, kind: str, hidden: int = 32) -> None:
        """``uniform`` (default) or ``variational`` (a flow q(u|x) trained with the model)."""
        if self.continuous and kind != "uniform":
            raise ValueError("dequantization applies to discrete data only; this data is continuous")
        dequantizer = make_dequantizer(kind, self.shape, self.levels, hidden)
        existing = next(iter(self.parameters()), None)  # none yet when called from __init__
        if existing is not None:
            dequantizer = dequantizer.to(existing.device, existing.dtype)
        self.dequantizer = dequantizer

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
        """Dequantized ``y`` only (``log q`` dropped): for plots and preprocessing checks."""
        return self.dequantizer(x, generator, self.dtype)[0]

    def log_prob(
        self,
        x: torch.Tensor,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        self.check_input(x)
        if self.continuous:
            return self.log_density(x.to(self.dtype), cond)
        y, log_q = self.dequantizer(x, generator, self.dtype)
        return self.log_density(y, cond) - self.dim * math.log(self.levels) - log_q

    def log_prob_iw(
        self,
        x: torch.Tensor,
        n_samples: int,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Importance-weighted estimate with ``n_samples`` dequantization samples per example."""
        samples = torch.stack([self.log_prob(x, cond, generator) for _ in range(n_samples)])
        return torch.logsumexp(samples, dim=0) - math.log(n_samples)

    @torch.no_grad()
    def sample(self, n, cond=None, temperature=1.0, generator=None):
        """``n`` samples. Where the inverse overflows in float32 (a trained flow can map a
        prior draw far out, e.g. Glow's contracting couplings inverted), the same noise is run
        through a float64 copy of the model, which gives the exact sample; a value that is still
        non-finite is an error, never a silently wrong image."""
        if generator is None:  # a generator of our own, so the noise can be replayed
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        state = generator.get_state()
        y = self.sample_continuous(n, cond, temperature, generator)
        bad = ~torch.isfinite(y).flatten(1).all(1)
        if bad.any() and self.dtype != torch.float64:
            generator.set_state(state)
            wide = copy.deepcopy(self).double()
            wide_cond = cond.double() if cond is not None and cond.is_floating_point() else cond
            y64 = wide.sample_continuous(n, wide_cond, temperature, generator)
            rows = bad.view(-1, *([1] * (y.dim() - 1)))
            y = torch.where(rows, y64.to(y.dtype), y)
            bad = ~torch.isfinite(y).flatten(1).all(1)
        if bad.any():
            raise DensitylabError(
                f"{int(bad.sum())} of {n} samples came out non-finite (the flow's inverse "
                "overflowed, even in float64); sample with a lower --temperature or train the "
                "model longer"
            )
        if self.continuous:
            return y
        return (y * self.levels).floor().clamp_(0, self.levels - 1).long()
