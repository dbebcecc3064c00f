"""NICE (Dinh, Krueger & Bengio, 2015, "NICE: Non-linear Independent Components Estimation").

The data is flattened to ``h in R^D`` and passed through additive couplings with alternating
partitions of the coordinates (even / odd indices of the flattened vector), then a diagonal
scaling, onto a standard logistic prior:

    coupling k:  h_b = h_b + m_k(h_a)       (m_k an MLP; log|det| = 0, volume preserving)
    scaling:     z = h * exp(s)             (log|det| = sum s)
    log p(h) = sum_d [log sigmoid(z_d) + log sigmoid(-z_d)] + sum_d s_d

With ``couplings = 4`` every coordinate is shifted twice, as in the paper. The last layer of each
``m_k`` and ``s`` start at zero, so the flow starts as the identity.

Images are dequantized to ``y in [0,1)^D`` (``flow.py``) and, by default, mapped by RealNVP's
``logit(alpha + (1 - 2 alpha) y)`` before the couplings (``preprocess="logit"``, with its
log-determinant). NICE itself modelled ``y`` directly (``preprocess="none"``); a logistic prior on
``[0, 1)`` data wastes much of its mass outside the data's range, and the logit map trains to far
lower bits/dim (docs/benchmarks.md), so it is the default. With ``preprocess="logit"``,
``alpha = 0`` and the identity initialisation the density is exactly uniform on ``[0, 1)^D``
(logistic prior o logit), the ``log2 K`` bits/dim anchor. Vectors (the toys) are used as they are;
continuous data is scored in nats/dim. The model is a :class:`Flow` built by :func:`nice`.
"""

from __future__ import annotations

import math
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
                "logistic prior; images, vectors and continuous toys", config=NICEConfig,
                default_lr=1e-3, data_kinds=frozenset({"image", "vector", "continuous"}))
def nice(config: NICEConfig, shape: tuple[int, ...], levels: int) -> Flow:
    """NICE: ``Flow([logit ->] additive couplings -> diagonal scaling -> logistic prior)``."""
    check_prior(config.prior)
    if config.prior == "uniform":
        raise ValueError("NICE's prior must be 'logistic' or 'gaussian' (a uniform prior "
                         "needs a flow onto [0, 1))")
    if config.preprocess not in PREPROCESSING:
        raise ValueError(f"preprocess must be one of {', '.join(PREPROCESSING)}, "
                         f"got {config.preprocess!r}")
    if config.couplings < 0 or min(config.hidden_features, config.hidden_layers) < 1:
        raise ValueError("couplings must be >= 0, hidden_features and hidden_layers >= 1")
    dim = math.prod(shape)
    if dim < 2:
        raise ValueError("NICE couples halves of the data, and 1-dimensional data has none "
                         "(use a 1D flow for 1D data)")
    layers: list[Transform] = [AdditiveCoupling(dim, k % 2, config.hidden_features, config.hidden_layers)
                               for k in range(config.couplings)]
    layers.append(DiagonalScaling(dim))
    logit = levels > 0 and config.preprocess == "logit"
    return Flow(shape, levels, CompositeTransform(layers), prior=config.prior,
                preprocess=LogitTransform(config.alpha) if logit else None,
                dequantization=config.dequantization)
