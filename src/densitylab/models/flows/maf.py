"""MAF (Papamakarios, Pavlakou & Murray, 2017, "Masked Autoregressive Flow for Density Estimation").

A stack of ``n`` masked autoregressive transforms (``autoregressive.py``), data -> noise:

    z = T_n o ... o T_1 (h),     T_k: z_i = (x_i - mu_i(x_<i)) exp(-alpha_i(x_<i))   (or a spline),
    log p_Y(y) = log N(z; 0, I) + sum_k log|det dT_k| + log|det dh/dy|,

each ``T_k`` in its own order (``permutation="reverse"``: the natural order and its reverse in
turn, as in the paper; ``"random"``: a random permutation per transform). Images are dequantized
(``flow.py``), mapped by ``h = logit(alpha + (1 - 2 alpha) y)`` and flattened to ``D =
C*H*W``; continuous toys (``levels == 0``) go in as they are. Density evaluation and training take
one MADE pass per transform; sampling takes ``D`` sequential passes per transform.

With ``context_features > 0`` every MADE also reads a continuous context ``c`` (unmasked), so the
flow is a conditional density ``p(x | c)`` (tabular density estimation, simulation-based
inference). The model is a :class:`Flow` built by :func:`maf`; IAF (``iaf.py``) is the same stack
inverted.

Deviations: no batch normalisation between transforms (each ``T_k`` starts as the identity
instead, so a model's output never depends on the batch; ``actnorm=True`` puts a data-initialised
ActNorm after each transform, Glow's batch-independent stand-in for it); ``alpha`` is soft-clamped
(``scale_bound``). ``prior="logistic"`` with ``alpha=0`` is exactly uniform on ``[0,1)^D`` at
initialisation (a sanity anchor). Parameter counts are of the stored weights: the masked upper
triangle of each MADE layer is not stored (see ``autoregressive.py``), so the paper-sized model
(5 x MADE 784-512-512-1568, 7.3M dense weights) holds 4.1M parameters, 3.65M of them live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from densitylab.models.base import register_model
from densitylab.models.flows.autoregressive import DEGREES, TRANSFORMS, MaskedAutoregressiveTransform
from densitylab.models.flows.flow import Flow
from densitylab.models.flows.priors import PRIORS
from densitylab.models.flows.transforms import (
    DEFAULT_LOGIT_ALPHA,
    ActNorm,
    AsChannels,
    CompositeTransform,
    LogitTransform,
    Transform,
)

PERMUTATIONS = ("reverse", "random")


@dataclass
class MAFConfig:
    """Defaults are the paper's image model (5 transforms of MADE 512-512). ``bins`` and
    ``tail_bound`` apply to ``transform="spline"``; ``alpha`` to images only; ``seed`` draws the
    MADE degrees and the random permutations."""

    n_transforms: int = 5
    hidden_sizes: list[int] = field(default_factory=lambda: [512, 512])
    transform: str = "affine"  # one of TRANSFORMS
    bins: int = 8
    tail_bound: float = 5.0
    scale_bound: float = 3.0
    alpha: float = DEFAULT_LOGIT_ALPHA
    dequantization: str = "uniform"  # or "variational" (Flow++), for discrete data
    prior: str = "gaussian"  # or "logistic"
    permutation: str = "reverse"  # one of PERMUTATIONS
    degrees: str = "random"  # MADE hidden degrees: "random" (MADE's) or "sequential" (MAF's code)
    actnorm: bool = False  # ActNorm after each transform (in place of the paper's batch norm)
    seed: int = 0
    context_features: int = 0  # > 0: a conditional density p(x | c) of a continuous context c


def check_config(config: MAFConfig) -> MAFConfig:
    sizes = config.hidden_sizes
    sizes = [sizes] if isinstance(sizes, int) else sizes
    if (not isinstance(sizes, list | tuple) or not sizes
            or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes)):
        raise ValueError(f"hidden_sizes must list at least one positive width, got {config.hidden_sizes!r}")
    config.hidden_sizes = [int(s) for s in sizes]
    if config.n_transforms < 1:
        raise ValueError(f"n_transforms must be at least 1, got {config.n_transforms}")
    if config.transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {config.transform!r}")
    if config.degrees not in DEGREES:
        raise ValueError(f"degrees must be one of {', '.join(DEGREES)}, got {config.degrees!r}")
    if config.permutation not in PERMUTATIONS:
        raise ValueError(f"permutation must be one of {', '.join(PERMUTATIONS)}, "
                         f"got {config.permutation!r}")
    if config.prior not in PRIORS or config.prior == "uniform":
        raise ValueError(f"prior must be 'gaussian' or 'logistic', got {config.prior!r}")
    if config.context_features < 0:
        raise ValueError(f"context_features must be >= 0, got {config.context_features}")
    return config


def orders(config: MAFConfig, dim: int) -> list[torch.Tensor]:
    """The autoregressive order of each transform."""
    if config.permutation == "reverse":
        natural = torch.arange(dim)
        return [natural if k % 2 == 0 else natural.flip(0) for k in range(config.n_transforms)]
    generator = torch.Generator().manual_seed(config.seed)
    return [torch.randperm(dim, generator=generator) for _ in range(config.n_transforms)]


def autoregressive_stack(config: MAFConfig, dim: int) -> CompositeTransform:
    """``T_n o ... o T_1``, data -> noise, each ``T_k`` one MADE pass (followed by ActNorm when
    ``config.actnorm``)."""
    transforms: list[Transform] = []
    context = {"context_features": config.context_features} if config.context_features else {}
    for k, order in enumerate(orders(config, dim)):
        transforms.append(MaskedAutoregressiveTransform(
            dim, config.hidden_sizes, order, config.transform, config.bins, config.tail_bound,
            config.scale_bound, seed=config.seed * 1000 + k, degrees=config.degrees, **context))
        if config.actnorm:
            transforms.append(AsChannels(ActNorm(dim)))
    return CompositeTransform(transforms)


def autoregressive_flow(config: MAFConfig, shape: tuple[int, ...], levels: int,
                        transform: Transform) -> Flow:
    """What MAF and IAF share: the logit preprocessing of discrete data and the prior."""
    return Flow(shape, levels, transform, prior=config.prior,
                preprocess=LogitTransform(config.alpha) if levels > 0 else None,
                dequantization=config.dequantization, context_features=config.context_features)


@register_model("maf", "MAF: masked autoregressive flow (MADE affine or spline transforms), optional "
                "context; density in one pass per transform, sampling in D; dequantization bound",
                config=MAFConfig, default_lr=2e-3, data_kinds=frozenset({"image", "vector", "continuous"}))
def maf(config: MAFConfig, shape: tuple[int, ...], levels: int) -> Flow:
    """MAF: ``Flow([logit ->] T_n o ... o T_1 -> prior)``."""
    config = check_config(config)
    return autoregressive_flow(config, shape, levels,
                               autoregressive_stack(config, math.prod(shape)))
