"""Glow (Kingma & Dhariwal, 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions").

Data ``y in [0,1)^D`` (dequantized, see ``dequantized.py``) is first mapped by RealNVP's
``h = logit(alpha + (1 - 2 alpha) y)`` (with its log-determinant); ``preprocess="center"`` uses
Glow's own ``h = y - 0.5`` instead. The logit is the default because it trained clearly better in
short CPU runs (30-40 s, lr 3e-3: 8x8 digits 2.49 vs 3.60 bits/dim, mnist5k 4.10 vs 7.15).
Then ``L`` levels, each

    squeeze (C, H, W) -> (4C, H/2, W/2);  K steps of [ActNorm -> 1x1 conv -> affine coupling];
    split: keep the first half of the channels, factor out the second half ``z_l``

where the factored-out half gets a *learned conditional prior*
``z_l ~ N(mu(h_kept), diag(exp(log_sigma(h_kept)))^2)`` from a zero-initialised 3x3 conv of the
kept half, and the last level's output gets a learned per-channel ``N(mu, sigma)`` (``learn_top``).
Each prior is written as the affine bijection ``eps = (z - mu) * exp(-log_sigma)`` with
``log|det| = -sum log_sigma``, so the model is a flow onto ``eps ~ N(0, I)`` and

    log p_Y(y) = log N(eps; 0, I) + log|det dh/dy| + sum_steps log|det J| - sum log_sigma.

- ActNorm: per-channel affine, initialised on a batch so its outputs have zero mean and unit
  variance (:meth:`Glow.initialize_from_data`, which the trainer calls before the first step).
- 1x1 convolution: LU-decomposed, ``log|det| = H W sum log|s|`` (``invconv.py``).
- Coupling: ``z_b = (x_b + t(x_a)) * sigmoid(r(x_a) + 2)``, Glow's sigmoid scale
  (``coupling.GlowCoupling``), last conv zero-initialised.

Sampling draws ``eps ~ N(0, T^2 I)``, i.e. every level's ``z_l = mu + T sigma eps'``: Glow's
temperature. ``n_levels`` needs H and W divisible by ``2 ** n_levels`` (28x28: up to 2 levels,
14x14 then 7x7; 8x8 digits: up to 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from densitylab.models.base import register_model
from densitylab.models.flows.coupling import GlowCoupling
from densitylab.models.flows.flow import Flow
from densitylab.models.flows.invconv import InvConv1x1
from densitylab.models.flows.transforms import (
    DEFAULT_LOGIT_ALPHA,
    ActNorm,
    CompositeTransform,
    LogitTransform,
    Shift,
    Squeeze,
    Transform,
    initialize_actnorms,
)

PREPROCESSING = ("center", "logit")


class SplitPrior(Transform):
    """The learned conditional prior of a split, as a bijection on ``(B, C, H, W)``.

    The first ``C // 2`` channels ``a`` pass unchanged; the rest ``b`` become
    ``eps = (b - mu(a)) * exp(-log_sigma(a))`` with ``(mu, log_sigma)`` from a zero-initialised
    3x3 conv of ``a`` (so it starts as ``N(0, I)``). ``log|det| = -sum log_sigma(a)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.keep = channels // 2
        self.net = nn.Conv2d(self.keep, 2 * (channels - self.keep), 3, padding=1)
        nn.init.zeros_(self.net.weight)
        nn.init.zeros_(self.net.bias)

    def _params(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = self.net(a).chunk(2, dim=1)
        return mu, log_sigma

    def forward(self, x, cond=None):
        a, b = x[:, : self.keep], x[:, self.keep :]
        mu, log_sigma = self._params(a)
        eps = (b - mu) * torch.exp(-log_sigma)
        return torch.cat([a, eps], 1), -log_sigma.flatten(1).sum(1)

    def inverse(self, z, cond=None):
        a, eps = z[:, : self.keep], z[:, self.keep :]
        mu, log_sigma = self._params(a)
        b = eps * torch.exp(log_sigma) + mu
        return torch.cat([a, b], 1), log_sigma.flatten(1).sum(1)


class LearnedPrior(Transform):
    """The top level's learned ``N(mu, sigma)`` per channel: ``eps = (z - mu) * exp(-log_sigma)``,
    ``log|det| = -H W sum log_sigma``; both start at zero."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_sigma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        return (-self.log_sigma.sum() * (x.shape[2] * x.shape[3])).expand(x.shape[0])

    def forward(self, x, cond=None):
        return (x - self.mu) * torch.exp(-self.log_sigma), self._logdet(x)

    def inverse(self, z, cond=None):
        return z * torch.exp(self.log_sigma) + self.mu, -self._logdet(z)


def flow_step(channels: int, hidden: int, hidden_layers: int) -> CompositeTransform:
    """One step of Glow: ActNorm -> invertible 1x1 conv -> affine coupling."""
    return CompositeTransform(
        [ActNorm(channels), InvConv1x1(channels), GlowCoupling(channels, hidden, hidden_layers)]
    )


class MultiScale(Transform):
    """Glow's multi-scale architecture: ``(B, C, H, W)`` -> flat ``eps`` ``(B, D)``, the
    factored-out halves of levels ``1..L-1`` then the top level, each flattened."""

    def __init__(self, shape: tuple[int, int, int], n_levels: int, steps: int, hidden: int,
                 hidden_layers: int, learn_top: bool) -> None:
        super().__init__()
        channels, height, width = shape
        levels, self.out_shapes = [], []
        for level in range(n_levels):
            if height % 2 or width % 2:
                raise ValueError(f"n_levels={n_levels} cannot squeeze {shape[1]}x{shape[2]} "
                                 f"images {n_levels} times; lower n_levels")
            channels, height, width = channels * 4, height // 2, width // 2
            layers: list[Transform] = [Squeeze()]
            layers += [flow_step(channels, hidden, hidden_layers) for _ in range(steps)]
            if level < n_levels - 1:
                layers.append(SplitPrior(channels))
                keep = channels // 2
                self.out_shapes.append((channels - keep, height, width))
                channels = keep
            elif learn_top:
                layers.append(LearnedPrior(channels))
            levels.append(CompositeTransform(layers))
        self.out_shapes.append((channels, height, width))
        self.levels = nn.ModuleList(levels)

    def forward(self, x, cond=None):
        h, total, outputs = x, x.new_zeros(x.shape[0]), []
        for k, level in enumerate(self.levels):
            h, logabsdet = level(h)
            total = total + logabsdet
            if k < len(self.levels) - 1:
                keep = h.shape[1] - self.out_shapes[k][0]
                outputs.append(h[:, keep:].flatten(1))
                h = h[:, :keep]
        outputs.append(h.flatten(1))
        return torch.cat(outputs, 1), total

    def inverse(self, z, cond=None):
        sizes = [math.prod(s) for s in self.out_shapes]
        pieces = [p.reshape(-1, *s)
                  for p, s in zip(z.flatten(1).split(sizes, 1), self.out_shapes, strict=True)]
        h, total = pieces[-1], z.new_zeros(z.shape[0])
        for k in reversed(range(len(self.levels))):
            if k < len(self.levels) - 1:
                h = torch.cat([h, pieces[k]], 1)
            h, logabsdet = self.levels[k].inverse(h)
            total = total + logabsdet
        return h, total


@dataclass
class GlowConfig:
    """``n_levels`` needs H and W divisible by ``2 ** n_levels``. ``preprocess``: ``logit``
    (RealNVP's, with ``alpha``) or ``center`` (Glow's ``y - 0.5``). ``learn_top``: a learned
    per-channel Gaussian for the top level (else ``N(0, I)``)."""

    n_levels: int = 2
    steps_per_level: int = 8
    hidden_channels: int = 64
    hidden_layers: int = 1
    preprocess: str = "logit"
    alpha: float = DEFAULT_LOGIT_ALPHA
    dequantization: str = "uniform"  # or "variational" (Flow++), for discrete data
    learn_top: bool = True


@register_model("glow", "Glow: multi-scale ActNorm + LU 1x1 conv + affine couplings, learned "
                "conditional split priors, temperature sampling; dequantization bound")
class Glow(Flow):
    Config = GlowConfig
    default_lr = 3e-3  # beat 1e-3 at the same 138 steps on digits (2.44 vs 2.64 bits/dim)
    data_kinds = frozenset({"image"})
    flatten = False
    prior = "gaussian"

    def __init__(self, config: GlowConfig, shape: tuple[int, int, int], levels: int) -> None:
        super().__init__(shape, levels)
        self.config = config
        self.set_dequantization(config.dequantization)
        if config.preprocess not in PREPROCESSING:
            raise ValueError(f"preprocess must be one of {', '.join(PREPROCESSING)}, "
                             f"got {config.preprocess!r}")
        if min(config.n_levels, config.steps_per_level, config.hidden_channels) < 1 \
                or config.hidden_layers < 0:
            raise ValueError("n_levels, steps_per_level and hidden_channels must be >= 1, "
                             "hidden_layers >= 0")
        first = Shift(-0.5) if config.preprocess == "center" else LogitTransform(config.alpha)
        self.transform = CompositeTransform([first, MultiScale(
            self.shape, config.n_levels, config.steps_per_level, config.hidden_channels,
            config.hidden_layers, config.learn_top)])

    @property
    def multiscale(self) -> MultiScale:
        return self.transform.transforms[1]

    def latent_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    def initialize_from_data(self, x: torch.Tensor) -> None:
        """ActNorm's data-dependent init: one training-mode forward pass on (up to 512 of) ``x``."""
        initialize_actnorms(self, x)
