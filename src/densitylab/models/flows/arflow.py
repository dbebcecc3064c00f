"""Autoregressive CDF flow: the 2D flow of Berkeley's CS294-158 "Deep Unsupervised Learning"
(lecture 3, homework 2, "2D autoregressive flow"), for any number of dimensions ``D``.

Each dimension is mapped by the CDF of a ``K``-component mixture (Gaussians or logistics,
``mixture_cdf.py``) whose parameters depend on the dimensions before it:

    z_i = F_i(x_i | x_<i),    log p(x) = sum_i log p_prior(z_i) + log f_i(x_i | x_<i)

The Jacobian ``dz/dx`` is lower triangular with diagonal ``f_i``, so with the uniform prior the
density is the product of the conditional mixture densities ``f_i(x_i | x_<i)``. For ``D = 2``:
``x_0`` has a learned unconditional mixture and ``x_1``'s mixture comes from an MLP of ``x_0``.

The conditioner is MADE's masked MLP (Germain et al., 2015; :class:`densitylab.nn.made.MaskedMLP`,
SiLU between layers): inputs have degree ``i + 1``, hidden units degrees cycling over ``1..D-1``
and read inputs of degree ``<=`` theirs, and the ``3K`` outputs of dimension ``i`` (logits, means,
log-scales) read hidden units of degree ``< i+1``. So dimension 0's parameters are the output
biases alone (and, with ``D = 1`` or ``hidden_layers = 0``, all of them are plain biases).
Inputs are standardised with per-dimension ``shift`` / ``scale`` buffers, and means and
log-scales come out in standardised units: ``mu = shift + scale * mu_hat``,
``log s = log scale + log_s_hat``. The buffers are set by ``initialize_from_data`` (data mean and
std), which also puts dimension ``i``'s mixture at the quantiles of ``x_i``; the output weights
start small so each conditional starts near that.

Inverse (sampling): sequential, ``x_0`` first, each dimension by bisection given the solved ones.
Discrete vectors are modelled through dequantization (``y`` in ``[0, 1)^D``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from densitylab.models.base import register_model
from densitylab.models.flows.flow import Flow
from densitylab.models.flows.mixture_cdf import (
    MixtureCDF,
    check_kind,
    check_latent,
    quantile_init,
    spread_init,
    standard_init,
)
from densitylab.models.flows.transforms import Transform
from densitylab.nn.made import MaskedMLP


@dataclass
class ARFlowConfig:
    """``hidden`` units in each of ``hidden_layers`` layers of the masked conditioner."""

    n_components: int = 5
    kind: str = "gaussian"
    prior: str = "uniform"
    hidden: int = 64
    hidden_layers: int = 2


class AutoregressiveMixtureCDF(Transform):
    """``z_i = G(F_i(x_i | x_<i))`` with a masked conditioner; see the module docstring."""

    def __init__(self, dim: int, config: ARFlowConfig) -> None:
        super().__init__()
        if config.n_components < 1 or config.hidden < 1 or config.hidden_layers < 0:
            raise ValueError("n_components and hidden must be >= 1, hidden_layers >= 0")
        self.dim, self.n_components = dim, config.n_components
        self.cdf = MixtureCDF(None, config.n_components, check_kind(config.kind),
                              check_latent(config.prior), conditional=True)
        per_dim = 3 * config.n_components
        if dim > 1 and config.hidden_layers > 0:
            self.conditioner: MaskedMLP | None = MaskedMLP(
                dim, [config.hidden] * config.hidden_layers, per_dim, activation="silu",
                output_scale=0.1)  # starts near the unconditional mixture of the biases
            self.bias = None
        else:  # nothing to condition on: the parameters are plain biases
            self.conditioner = None
            self.bias = nn.Parameter(torch.zeros(dim * per_dim))
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    @torch.no_grad()
    def set_standardization(self, shift: torch.Tensor, scale: torch.Tensor,
                            means: torch.Tensor, log_scales: torch.Tensor) -> None:
        """Input ``shift``/``scale`` ``(D,)``; the unconditional mixture ``(D, K)`` in data units."""
        self.shift.copy_(shift)
        self.scale.copy_(scale)
        k = self.n_components
        flat = self.bias if self.conditioner is None else self.conditioner.output_bias()
        bias = flat.view(self.dim, 3 * k)
        bias[:, :k] = 0
        bias[:, k : 2 * k] = (means - shift[:, None]) / scale[:, None]
        bias[:, 2 * k :] = log_scales - torch.log(scale)[:, None]

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Standardise with the data's mean and std; each dimension's mixture at its quantiles."""
        if len(x) < 2:
            return
        y = x.double().flatten(1)
        means, log_scales = quantile_init(y, self.n_components)
        self.set_standardization(y.mean(0), y.std(0).clamp_min(1e-3), means, log_scales)

    def params(self, x: torch.Tensor) -> torch.Tensor:
        """Mixture parameters ``(B, D, 3K)`` in data units, dimension ``i`` from ``x_<i``."""
        if self.conditioner is None:
            raw = self.bias.view(1, self.dim, -1).expand(x.shape[0], -1, -1)
        else:
            raw = self.conditioner((x - self.shift) / self.scale)
        logits, means, log_scales = raw.split(self.n_components, -1)
        means = self.shift[:, None] + self.scale[:, None] * means
        log_scales = log_scales + torch.log(self.scale)[:, None]
        return torch.cat([logits, means, log_scales], -1)

    def forward(self, x, cond=None):
        if cond is not None:
            raise ValueError("arflow is unconditional; it takes no cond")
        return self.cdf(x, self.params(x))

    def inverse(self, z, cond=None):
        if cond is not None:
            raise ValueError("arflow is unconditional; it takes no cond")
        x = torch.zeros_like(z)
        for i in range(self.dim):  # params[:, i] reads x[:, :i] only, which is solved
            xi = self.cdf.solve(z[:, i : i + 1], self.params(x)[:, i : i + 1])
            x = torch.cat([x[:, :i], xi, x[:, i + 1 :]], 1)
        return x, -self.forward(x)[1]


@register_model("arflow", "autoregressive CDF flow: z_i = F(x_i | x_<i), mixture CDFs from a "
                "masked MLP, uniform prior (CS294-158 2D homework)", config=ARFlowConfig,
                default_lr=5e-3, data_kinds=frozenset({"vector", "continuous"}))
def arflow(config: ARFlowConfig, shape: tuple[int, ...], levels: int) -> Flow:
    """``Flow(AutoregressiveMixtureCDF -> prior)``, standardised for unit-scale data until its
    data-dependent init fits the data's own scale and quantiles."""
    if len(shape) != 1:
        raise ValueError(f"arflow models vectors (D,), got shape {tuple(shape)}")
    dim = shape[0]
    transform = AutoregressiveMixtureCDF(dim, config)
    k = config.n_components
    if levels == 0:
        means, log_scales = standard_init(dim, k)
        shift, scale = torch.zeros(dim), torch.ones(dim)
    else:  # dequantized data in [0, 1)^D
        means, log_scales = spread_init(dim, k, 0.0, 1.0)
        shift, scale = torch.full((dim,), 0.5), torch.full((dim,), math.sqrt(1 / 12))
    transform.set_standardization(shift, scale, means, log_scales)
    flow = Flow(shape, levels, transform, prior=check_latent(config.prior))
    flow.init_examples = 4096
    return flow
