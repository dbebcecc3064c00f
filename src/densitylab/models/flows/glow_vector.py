"""Glow's flow step on vectors (Kingma & Dhariwal, 2018, "Glow: Generative Flow with Invertible
1x1 Convolutions"): the "Glow-style" flow of the 2D toys and other ``(B, D)`` data.

``K`` steps, each

    ActNorm:           h = (x - b) * exp(-log_s)                  log|det| = -sum log_s
    invertible linear: h' = W h,  W = P L (U + diag(sign_s exp(log|s|)))   log|det| = sum log|s|
    affine coupling:   z_b = (h'_b + t(h'_a)) * s(h'_a),  s = 0.01 + 0.99 sigmoid(r(h'_a) + 2)
                                                              log|det| = sum log s

onto ``N(0, I)``. The invertible linear map is the 1x1 convolution of an image with one pixel
whose channels are the coordinates (``invconv.py``, LU-decomposed, starting as a random rotation),
so it learns the mixing that RealNVP gets from alternating masks; the coupling is Glow's
(``coupling.GlowCoupling`` with an MLP, first ``D // 2`` coordinates conditioning the rest, last
layer zero), its scale bounded away from 0 so the inverse cannot overflow. ActNorm is initialised
on the data before the first step. There is no multi-scale split: on a few coordinates there is
nothing to factor out (the image model is ``glow.py``).

Continuous vectors are used as they are (scored in nats/dim); discrete vectors are dequantized to
``y in [0,1)^D`` and mapped by ``logit(alpha + (1 - 2 alpha) y)`` first.
"""

from __future__ import annotations

from dataclasses import dataclass

from densitylab.models.base import register_model
from densitylab.models.flows.coupling import GlowCoupling
from densitylab.models.flows.flow import Flow
from densitylab.models.flows.invconv import InvConv1x1
from densitylab.models.flows.realnvp_vector import check_vector_dim, vector_flow
from densitylab.models.flows.transforms import (
    DEFAULT_LOGIT_ALPHA,
    ActNorm,
    AsChannels,
    CompositeTransform,
    Transform,
)


@dataclass
class GlowVectorConfig:
    """``steps`` flow steps; each coupling's MLP has ``hidden_layers + 1`` hidden layers of
    ``hidden_features`` units (the image Glow's conv net has ``hidden_layers`` 1x1 layers between
    two 3x3 ones); ``alpha`` is the logit's margin for discrete data; ``context_features > 0``
    conditions every coupling on a context."""

    steps: int = 8
    hidden_features: int = 128
    hidden_layers: int = 1
    alpha: float = DEFAULT_LOGIT_ALPHA
    dequantization: str = "uniform"  # or "variational" (Flow++), for discrete data
    context_features: int = 0


def vector_flow_step(dim: int, hidden: int, hidden_layers: int,
                     context_features: int = 0) -> CompositeTransform:
    """ActNorm -> invertible linear map -> Glow's affine coupling, on ``(B, dim)`` vectors."""
    return CompositeTransform([AsChannels(ActNorm(dim)), AsChannels(InvConv1x1(dim)),
                               GlowCoupling(dim, hidden, hidden_layers, vectors=True,
                                            context_features=context_features)])


@register_model("glow_vector", "Glow steps on vectors: ActNorm + LU invertible linear map + affine "
                "coupling (MLPs), Gaussian prior, optional context; the 2D toys and tables",
                config=GlowVectorConfig, default_lr=1e-3,
                data_kinds=frozenset({"vector", "continuous"}))
def glow_vector(config: GlowVectorConfig, shape: tuple[int, ...], levels: int) -> Flow:
    if min(config.steps, config.hidden_features) < 1 or config.hidden_layers < 0:
        raise ValueError("steps and hidden_features must be >= 1, hidden_layers >= 0")
    dim = check_vector_dim(shape)
    steps: list[Transform] = [vector_flow_step(dim, config.hidden_features, config.hidden_layers,
                                               config.context_features)
                              for _ in range(config.steps)]
    return vector_flow(shape, levels, CompositeTransform(steps), "gaussian",
                       config.dequantization, config.alpha, config.context_features)
