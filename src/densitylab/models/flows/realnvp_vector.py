"""RealNVP on vectors (Dinh, Sohl-Dickstein & Bengio, 2017, "Density estimation using Real NVP"):
the affine coupling flow of the paper's 2D illustrations, for the toys and other ``(B, D)`` data.

A stack of affine couplings whose masks alternate between the even and the odd coordinates
(``coupling.AffineVectorCoupling``), each followed by ActNorm (a data-initialised per-coordinate
affine map, used here in place of the paper's batch normalisation so that a density does not
depend on the batch), onto a standard Gaussian (or logistic) prior:

    coupling k:  z_b = x_b * exp(s_k(x_a)) + t_k(x_a),  z_a = x_a,   log|det| = sum s_k(x_a)
    ActNorm:     z = (x - b) * exp(-log_s),                          log|det| = -sum log_s
    log p(x) = log N(z; 0, I) + sum of the log|det| terms

``s_k`` and ``t_k`` come from one MLP per coupling (last layer zero, so every coupling starts as
the identity); ``s = scale * tanh(s_raw)`` is bounded, so neither direction can blow up. With
``couplings = 2`` each coordinate is transformed once; the default of 8 transforms each four times.

Continuous vectors are used as they are (scored in nats/dim). Discrete vectors are dequantized to
``y in [0,1)^D`` and mapped by RealNVP's ``logit(alpha + (1 - 2 alpha) y)`` first. The image model
with checkerboard and channel masks is ``realnvp.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from densitylab.models.base import register_model
from densitylab.models.flows.coupling import AffineVectorCoupling
from densitylab.models.flows.flow import Flow
from densitylab.models.flows.priors import check_prior
from densitylab.models.flows.transforms import (
    DEFAULT_LOGIT_ALPHA,
    ActNorm,
    AsChannels,
    CompositeTransform,
    LogitTransform,
    Transform,
)


@dataclass
class RealNVPVectorConfig:
    """``couplings`` affine couplings of alternating parity, each an MLP of ``hidden_layers``
    hidden layers of ``hidden_features`` units; ``actnorm`` after each; ``alpha`` is the logit's
    margin for discrete data; ``context_features > 0`` conditions every coupling on a context."""

    couplings: int = 8
    hidden_features: int = 128
    hidden_layers: int = 2
    actnorm: bool = True
    prior: str = "gaussian"
    alpha: float = DEFAULT_LOGIT_ALPHA
    dequantization: str = "uniform"  # or "variational" (Flow++), for discrete data
    context_features: int = 0


def vector_flow(shape: tuple[int, ...], levels: int, transform: Transform, prior: str,
                dequantization: str, alpha: float, context_features: int) -> Flow:
    """What the coupling flows on ``(B, D)`` vectors share: continuous vectors go in as they
    are; discrete ones are dequantized and mapped by RealNVP's logit first."""
    return Flow(shape, levels, transform, prior=prior,
                preprocess=LogitTransform(alpha) if levels > 0 else None,
                dequantization=dequantization, context_features=context_features)


def check_vector_dim(shape: tuple[int, ...]) -> int:
    dim = math.prod(shape)
    if dim < 2:
        raise ValueError("a coupling flow splits the coordinates in two, and 1-dimensional "
                         "data has one (use cdf1d for 1D data)")
    return dim


@register_model("realnvp_vector", "RealNVP on vectors: affine couplings with alternating even/odd "
                "masks (MLPs), ActNorm, Gaussian prior, optional context; the 2D toys and tables",
                config=RealNVPVectorConfig, default_lr=1e-3,
                data_kinds=frozenset({"vector", "continuous"}))
def realnvp_vector(config: RealNVPVectorConfig, shape: tuple[int, ...], levels: int) -> Flow:
    check_prior(config.prior)
    if config.prior == "uniform":
        raise ValueError("the prior must be 'gaussian' or 'logistic' (a uniform prior needs a "
                         "flow onto [0, 1))")
    if min(config.couplings, config.hidden_features, config.hidden_layers) < 1:
        raise ValueError("couplings, hidden_features and hidden_layers must be >= 1")
    dim = check_vector_dim(shape)
    layers: list[Transform] = []
    for k in range(config.couplings):
        layers.append(AffineVectorCoupling(dim, k % 2, config.hidden_features,
                                           config.hidden_layers, config.context_features))
        if config.actnorm:
            layers.append(AsChannels(ActNorm(dim)))
    return vector_flow(shape, levels, CompositeTransform(layers), config.prior,
                       config.dequantization, config.alpha, config.context_features)
