"""MAF (Papamakarios, Pavlakou & Murray, 2017, "Masked Autoregressive Flow for Density Estimation").

A stack of ``n`` masked autoregressive transforms (``autoregressive.py``), data -> noise:

    z = T_n o ... o T_1 (h),     T_k: z_i = (x_i - mu_i(x_<i)) exp(-alpha_i(x_<i))   (or a spline),
    log p_Y(y) = log N(z; 0, I) + sum_k log|det dT_k| + log|det dh/dy|,

each ``T_k`` in its own order (``permutation="reverse"``: the natural order and its reverse in
turn, as in the paper; ``"random"``: a random permutation per transform). Images are dequantized
(``dequantized.py``), mapped by ``h = logit(alpha + (1 - 2 alpha) y)`` and flattened to ``D =
C*H*W``; continuous toys (``levels == 0``) go in as they are. Density evaluation and training take
one MADE pass per transform; sampling takes ``D`` sequential passes per transform.

Deviations: no batch normalisation between transforms (each ``T_k`` starts as the identity
instead, so a model's output never depends on the batch; ``actnorm=True`` puts a data-initialised
ActNorm after each transform, Glow's batch-independent stand-in for it); ``alpha`` is soft-clamped
(``scale_bound``). ``prior="logistic"`` with ``alpha=0`` is exactly uniform on ``[0,1)^D`` at
initialisation (a sanity anchor). Parameter counts are of the stored weights: the masked upper
triangle of each MADE layer is not stored (see ``autoregressive.py``), so the paper-sized model
(5 x MADE 784-512-512-1568, 7.3M dense weights) holds 4.1M parameters, 3.65M of them live.
"""

from __future__ import annotations

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
    initialize_actnorms,
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
    # MADE hidden degrees: "random" (MADE's) or "sequential" (the MAF paper's code); 2-minute
    # Fashion-MNIST runs: random 4.283 bits/dim at 942 images/s, sequential 4.341 at 880
    degrees: str = "random"
    actnorm: bool = False  # ActNorm after each transform (in place of the paper's batch norm)
    seed: int = 0


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
    for k, order in enumerate(orders(config, dim)):
        transforms.append(MaskedAutoregressiveTransform(
            dim, config.hidden_sizes, order, config.transform, config.bins, config.tail_bound,
            config.scale_bound, seed=config.seed * 1000 + k, degrees=config.degrees))
        if config.actnorm:
            transforms.append(AsChannels(ActNorm(dim)))
    return CompositeTransform(transforms)


class AutoregressiveFlow(Flow):
    """What MAF and IAF share: config checks, preprocessing and the prior."""

    data_kinds = frozenset({"image", "vector", "continuous"})
    default_lr = 1e-3

    def __init__(self, config: MAFConfig, shape: tuple[int, ...], levels: int) -> None:
        super().__init__(shape, levels)
        self.config = check_config(config)
        self.set_dequantization(config.dequantization)
        self.prior = config.prior
        if not self.continuous:
            self.preprocess = LogitTransform(config.alpha)

    def initialize_from_data(self, x: torch.Tensor) -> None:
        """ActNorm's data-dependent init (``actnorm=True``; MAF only: an IAF's data -> noise
        direction runs each ActNorm's inverse, so there they start as the identity)."""
        initialize_actnorms(self, x)

    def log_density(self, y, cond=None):
        _unconditional(cond)
        return super().log_density(y)

    def sample_continuous(self, n, cond=None, temperature=1.0, generator=None):
        _unconditional(cond)
        return super().sample_continuous(n, None, temperature, generator)


def _unconditional(cond) -> None:
    if cond is not None:
        raise ValueError("maf and iaf are unconditional: they take no cond (labels); drop --conditional")


@register_model("maf", "MAF: masked autoregressive flow (MADE affine or spline transforms); "
                "density in one pass per transform, sampling in D; dequantization bound")
class MAF(AutoregressiveFlow):
    Config = MAFConfig
    # 8-minute Fashion-MNIST benchmark (benchmarks/fixed_budget.py): with the logit margin 1e-4,
    # 3.649 bits/dim at 2e-3 and 3.701 at 1e-3; with 0.05, 3.974 at 1e-3, 4.057 at 3e-3, 4.049 at 5e-4
    default_lr = 2e-3

    def __init__(self, config: MAFConfig, shape: tuple[int, ...], levels: int) -> None:
        super().__init__(config, shape, levels)
        self.transform = autoregressive_stack(self.config, self.dim)
