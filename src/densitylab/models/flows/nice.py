"""NICE (Dinh, Krueger & Bengio, 2015, "NICE: Non-linear Independent Components Estimation").

The data is flattened to ``h in R^D`` and passed through additive couplings with alternating
partitions of the coordinates (even / odd indices of the flattened vector), then a diagonal
scaling, onto a standard logistic prior:

    coupling k:  h_b = h_b + m_k(h_a)       (m_k an MLP; log|det| = 0, volume preserving)
    scaling:     z = h * exp(s)             (log|det| = sum s)
    log p(h) = sum_d [log sigmoid(z_d) + log sigmoid(-z_d)] + sum_d s_d

With ``couplings = 4`` every coordinate is shifted twice, as in the paper. The last layer of each
``m_k`` and ``s`` start at zero, so the flow starts as the identity.

Images are dequantized to ``y in [0,1)^D`` (``dequantized.py``) and, by default, mapped by
RealNVP's ``logit(alpha + (1 - 2 alpha) y)`` before the couplings (``preprocess="logit"``, with its
log-determinant). NICE itself modelled ``y`` directly (``preprocess="none"``); the logit map
gives far lower bits/dim in 30 s CPU runs (8x8 digits: 3.16 vs 6.00; mnist5k: 6.24 vs 9.94; a
logistic prior on ``[0, 1)`` data wastes much of its mass outside the data's range), so it is the
default. With
``preprocess="logit"``, ``alpha = 0`` and the identity initialisation the density is exactly
uniform on ``[0, 1)^D`` (logistic prior o logit), the ``log2 K`` bits/dim anchor. Vectors (the toys)
are used as they are (no preprocessing); continuous data is scored in nats/dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from densitylab.models.base import register_model
from densitylab.models.flows.coupling import AdditiveCoupling
from densitylab.models.flows.flow import Flow
from densitylab.models.flows.priors import check_prior
from densitylab.models.flows.transforms import (
    DEFAULT_LOGIT_ALPHA,
    CompositeTransform,
    LogitTransform,
    Transform,
)

PREPROCESSING = ("logit", "none")


class DiagonalScaling(Transform):
    """``z = x * exp(s)`` per coordinate of ``(B, D)`` vectors; ``log|det| = sum s``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def forward(self, x, cond=None):
        return x * torch.exp(self.log_scale), self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z, cond=None):
        return z * torch.exp(-self.log_scale), -self.log_scale.sum().expand(z.shape[0])


@dataclass
class NICEConfig:
    """``preprocess`` (images and other discrete data only): ``logit`` (with ``alpha``) or
    ``none`` (NICE's own choice: the dequantized values in ``[0, 1)``)."""

    couplings: int = 4
    hidden_features: int = 512
    hidden_layers: int = 4
    preprocess: str = "logit"
    alpha: float = DEFAULT_LOGIT_ALPHA
    dequantization: str = "uniform"  # or "variational" (Flow++), for discrete data
    prior: str = "logistic"


@register_model("nice", "NICE: additive couplings (even/odd partitions, MLPs), diagonal scaling, "
                "logistic prior; images, vectors and continuous toys")
class NICE(Flow):
    Config = NICEConfig
    default_lr = 1e-3
    data_kinds = frozenset({"image", "vector", "continuous"})
    flatten = True

    def __init__(self, config: NICEConfig, shape: tuple[int, ...], levels: int) -> None:
        super().__init__(shape, levels)
        self.config = config
        self.set_dequantization(config.dequantization)
        self.prior = check_prior(config.prior)
        if config.prior == "uniform":
            raise ValueError("NICE's prior must be 'logistic' or 'gaussian' (a uniform prior "
                             "needs a flow onto [0, 1))")
        if config.preprocess not in PREPROCESSING:
            raise ValueError(f"preprocess must be one of {', '.join(PREPROCESSING)}, "
                             f"got {config.preprocess!r}")
        if config.couplings < 0 or min(config.hidden_features, config.hidden_layers) < 1:
            raise ValueError("couplings must be >= 0, hidden_features and hidden_layers >= 1")
        if self.dim < 2:
            raise ValueError("NICE couples halves of the data, and 1-dimensional data has none "
                             "(use a 1D flow for 1D data)")
        layers: list[Transform] = []
        if not self.continuous and config.preprocess == "logit":
            layers.append(LogitTransform(config.alpha))
        layers += [AdditiveCoupling(self.dim, k % 2, config.hidden_features, config.hidden_layers)
                   for k in range(config.couplings)]
        layers.append(DiagonalScaling(self.dim))
        self.transform = CompositeTransform(layers)
