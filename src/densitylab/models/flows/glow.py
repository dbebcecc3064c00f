"""Glow (Kingma & Dhariwal, 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions").

Data ``y in [0,1)^D`` (dequantized, see ``flow.py``) is first mapped by RealNVP's
``h = logit(alpha + (1 - 2 alpha) y)`` (with its log-determinant); ``preprocess="center"`` uses
Glow's own ``h = y - 0.5`` instead (the logit trains better in short CPU runs: docs/benchmarks.md).
Then ``L`` scales (``n_scales``), each

    squeeze (C, H, W) -> (4C, H/2, W/2);  K steps of [ActNorm -> 1x1 conv -> affine coupling];
    split: keep the first half of the channels, factor out the second half ``z_l``

where the factored-out half gets a *learned conditional prior*
``z_l ~ N(mu(h_kept), diag(exp(log_sigma(h_kept)))^2)`` from a zero-initialised 3x3 conv of the
kept half, and the last scale's output gets a learned per-channel ``N(mu, sigma)`` (``learn_top``).
Each prior is written as the affine bijection ``eps = (z - mu) * exp(-log_sigma)`` with
``log|det| = -sum log_sigma``, so the model is a flow onto ``eps ~ N(0, I)`` and

    log p_Y(y) = log N(eps; 0, I) + log|det dh/dy| + sum_steps log|det J| - sum log_sigma.

- ActNorm: per-channel affine, initialised on a batch so its outputs have zero mean and unit
  variance (``Flow.initialize``, which the trainer calls before the first step).
- 1x1 convolution: LU-decomposed, ``log|det| = H W sum log|s|`` (``invconv.py``).
- Coupling: ``z_b = (x_b + t(x_a)) * sigmoid(r(x_a) + 2)``, Glow's sigmoid scale
  (``coupling.GlowCoupling``), last conv zero-initialised.

The scales and their factor-out are the multi-scale transform RealNVP uses too
(``multiscale.py``); the model is a :class:`Flow` built by :func:`glow`.

Sampling draws ``eps ~ N(0, T^2 I)``, i.e. every scale's ``z_l = mu + T sigma eps'``: Glow's
temperature. ``n_scales`` needs H and W divisible by ``2 ** n_scales`` (28x28: up to 2 scales,
14x14 then 7x7; 8x8 digits: up to 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from densitylab.models.base import register_model
from densitylab.models.flows.coupling import GlowCoupling
from densitylab.models.flows.flow import Flow
from densitylab.models.flows.invconv import InvConv1x1
from densitylab.models.flows.multiscale import MultiScale
from densitylab.models.flows.transforms import (
    DEFAULT_LOGIT_ALPHA,
    ActNorm,
    CompositeTransform,
    LogitTransform,
    Shift,
    Squeeze,
    Transform,
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
    """The top scale's learned ``N(mu, sigma)`` per channel: ``eps = (z - mu) * exp(-log_sigma)``,
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


def glow_transform(shape: tuple[int, int, int], n_scales: int, steps: int, hidden: int,
                   hidden_layers: int, learn_top: bool) -> MultiScale:
    """Glow's multi-scale transform: per scale a squeeze, ``steps`` flow steps, and (but the
    last) a :class:`SplitPrior` whose second half is factored out; the last scale ends with the
    learned top prior when ``learn_top``. Output: flat ``eps`` ``(B, D)``."""
    channels, height, width = shape
    stages: list[Transform] = []
    out_shapes: list[tuple[int, int, int]] = []
    for scale in range(n_scales):
        if height % 2 or width % 2:
            raise ValueError(f"n_scales={n_scales} cannot squeeze {shape[1]}x{shape[2]} "
                             f"images {n_scales} times; lower n_scales")
        channels, height, width = channels * 4, height // 2, width // 2
        layers: list[Transform] = [Squeeze()]
        layers += [flow_step(channels, hidden, hidden_layers) for _ in range(steps)]
        if scale < n_scales - 1:
            layers.append(SplitPrior(channels))
            keep = channels // 2
            out_shapes.append((channels - keep, height, width))
            channels = keep
        elif learn_top:
            layers.append(LearnedPrior(channels))
        stages.append(CompositeTransform(layers))
    out_shapes.append((channels, height, width))
    return MultiScale(stages, out_shapes)


@dataclass
class GlowConfig:
    """``n_scales`` needs H and W divisible by ``2 ** n_scales``. ``preprocess``: ``logit``
    (RealNVP's, with ``alpha``) or ``center`` (Glow's ``y - 0.5``). ``learn_top``: a learned
    per-channel Gaussian for the top scale (else ``N(0, I)``)."""

    n_scales: int = 2
    steps_per_scale: int = 8
    hidden_channels: int = 64
    hidden_layers: int = 1
    preprocess: str = "logit"
    alpha: float = DEFAULT_LOGIT_ALPHA
    dequantization: str = "uniform"  # or "variational" (Flow++), for discrete data
    learn_top: bool = True


@register_model("glow", "Glow: multi-scale ActNorm + LU 1x1 conv + affine couplings, learned "
                "conditional split priors, temperature sampling; dequantization bound",
                config=GlowConfig, default_lr=3e-3, data_kinds=frozenset({"image"}))
def glow(config: GlowConfig, shape: tuple[int, int, int], levels: int) -> Flow:
    """Glow on images: ``Flow(logit or centring -> multi-scale steps -> N(0, I))``."""
    if config.preprocess not in PREPROCESSING:
        raise ValueError(f"preprocess must be one of {', '.join(PREPROCESSING)}, "
                         f"got {config.preprocess!r}")
    if min(config.n_scales, config.steps_per_scale, config.hidden_channels) < 1 \
            or config.hidden_layers < 0:
        raise ValueError("n_scales, steps_per_scale and hidden_channels must be >= 1, "
                         "hidden_layers >= 0")
    preprocess = Shift(-0.5) if config.preprocess == "center" else LogitTransform(config.alpha)
    transform = glow_transform(shape, config.n_scales, config.steps_per_scale,
                               config.hidden_channels, config.hidden_layers, config.learn_top)
    return Flow(shape, levels, transform, prior="gaussian", preprocess=preprocess,
                dequantization=config.dequantization, flatten=False,
                latent_shape=(int(shape[0] * shape[1] * shape[2]),))
