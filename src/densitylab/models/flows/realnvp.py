"""RealNVP for images (Dinh, Sohl-Dickstein & Bengio, 2017, "Density estimation using Real NVP").

Data ``y in [0,1)^D`` (dequantized, see ``dequantized.py``) is first mapped by
``logit(alpha + (1 - 2 alpha) y)``; then a multi-scale stack of affine couplings maps it to
``z ~ N(0, I)``. Each scale but the last applies 3 checkerboard couplings, a squeeze
``(C, H, W) -> (4C, H/2, W/2)``, 3 channel couplings, and factors out half of the channels
(they go straight to the prior); the last scale applies 4 checkerboard couplings. The option
``mask`` replaces the checkerboard by a ``top-bottom`` or ``left-right`` half-image mask
(``coupling.py``), to compare them at the same budget (the paper: halves do worse). So

    log p_Y(y) = log N(z; 0, I) + log|det dlogit/dy| + sum_k log|det J_k|.

Every coupling is followed by ActNorm (Glow's data-initialised per-channel affine map), in place
of RealNVP's batch normalisation, so a model's output does not depend on the batch; it is
initialised on the data by :meth:`RealNVP.initialize_from_data`, before the first step. Scales are
bounded (``scale * tanh``). ``prior="logistic"`` with ``alpha=0`` makes the identity flow exactly
uniform on ``[0,1)^D``, a sanity anchor for the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from densitylab.models.base import register_model
from densitylab.models.flows.coupling import SPATIAL_MASKS, AffineCoupling
from densitylab.models.flows.dequantized import DequantizedFlow
from densitylab.models.flows.transforms import (
    DEFAULT_LOGIT_ALPHA,
    ActNorm,
    CompositeTransform,
    LogitTransform,
    Squeeze,
    Transform,
    initialize_actnorms,
)


@dataclass
class RealNVPConfig:
    """Defaults chosen by the 8-minute CPU benchmark (3 scales of narrow coupling networks beat
    2 scales of wide ones at a fixed budget; see README). ``n_scales`` needs H and W divisible by
    ``2 ** (n_scales - 1)``. ``mask`` is the spatial mask used before each squeeze and at the last
    scale: ``checkerboard``, ``top-bottom`` or ``left-right`` (channel masks after a squeeze stay)."""

    n_scales: int = 3
    couplings_per_mask: int = 3
    final_couplings: int = 4
    hidden_channels: int = 32
    hidden_layers: int = 1
    alpha: float = DEFAULT_LOGIT_ALPHA
    prior: str = "gaussian"
    actnorm: bool = True
    mask: str = "checkerboard"
    dequantization: str = "uniform"  # or "variational": Flow++'s learned q(u|x), trained jointly


def _coupling_stack(channels: int, mask: str, count: int, config: RealNVPConfig) -> list[Transform]:
    layers: list[Transform] = []
    for k in range(count):
        layers.append(
            AffineCoupling(channels, mask, k % 2, config.hidden_channels, config.hidden_layers)
        )
        if config.actnorm:
            layers.append(ActNorm(channels))
    return layers


@register_model("realnvp", "RealNVP: logit preprocessing, multi-scale affine couplings "
                "(checkerboard or half-image + channel masks), ActNorm, Gaussian prior; "
                "dequantization bound")
class RealNVP(DequantizedFlow):
    Config = RealNVPConfig
    default_lr = 3e-3

    def __init__(self, config: RealNVPConfig, shape: tuple[int, int, int], levels: int) -> None:
        super().__init__(shape, levels)
        self.config = config
        if config.prior not in ("gaussian", "logistic"):
            raise ValueError(f"prior must be 'gaussian' or 'logistic', got {config.prior!r}")
        if min(config.n_scales, config.couplings_per_mask, config.final_couplings,
               config.hidden_channels) < 1 or config.hidden_layers < 0:
            raise ValueError("n_scales, couplings and hidden_channels must be >= 1, hidden_layers >= 0")
        if config.mask not in SPATIAL_MASKS:
            raise ValueError(f"mask must be one of {', '.join(SPATIAL_MASKS)}, got {config.mask!r}")
        self.set_dequantization(config.dequantization)
        self.preprocess = LogitTransform(config.alpha)
        channels, height, width = self.shape
        stages, self.latent_shapes = [], []
        for _ in range(config.n_scales - 1):
            if height % 2 or width % 2:
                raise ValueError(
                    f"n_scales={config.n_scales} cannot squeeze {height}x{width} images; lower n_scales"
                )
            layers = _coupling_stack(channels, config.mask, config.couplings_per_mask, config)
            layers.append(Squeeze())
            channels, height, width = channels * 4, height // 2, width // 2
            layers += _coupling_stack(channels, "channel", config.couplings_per_mask, config)
            stages.append(CompositeTransform(layers))
            self.latent_shapes.append((channels // 2, height, width))
            channels = channels - channels // 2
        stages.append(
            CompositeTransform(_coupling_stack(channels, config.mask, config.final_couplings, config))
        )
        self.latent_shapes.append((channels, height, width))
        self.stages = nn.ModuleList(stages)

    def initialize_from_data(self, x: torch.Tensor) -> None:
        """ActNorm's data-dependent init: one training-mode forward pass on (up to 512 of) ``x``."""
        initialize_actnorms(self, x)

    def to_latent(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data ``y in [0,1)^D`` -> flat latent ``z`` ``(B, D)`` and ``log|det dz/dy|``."""
        h, logabsdet = self.preprocess(y)
        latents = []
        for k, stage in enumerate(self.stages):
            h, ld = stage(h)
            logabsdet = logabsdet + ld
            if k < len(self.stages) - 1:
                out_channels = self.latent_shapes[k][0]
                latents.append(h[:, :out_channels].flatten(1))
                h = h[:, out_channels:]
        latents.append(h.flatten(1))
        return torch.cat(latents, 1), logabsdet

    def from_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat latent ``z`` -> data ``y`` and ``log|det dy/dz|``."""
        sizes = [math.prod(s) for s in self.latent_shapes]
        pieces = [p.reshape(-1, *s) for p, s in zip(z.split(sizes, 1), self.latent_shapes, strict=True)]
        h = pieces[-1]
        logabsdet = z.new_zeros(z.shape[0])
        for k in reversed(range(len(self.stages))):
            if k < len(self.stages) - 1:
                h = torch.cat([pieces[k], h], 1)
            h, ld = self.stages[k].inverse(h)
            logabsdet = logabsdet + ld
        y, ld = self.preprocess.inverse(h)
        return y, logabsdet + ld

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.prior == "gaussian":
            return (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(1)
        return (F.logsigmoid(z) + F.logsigmoid(-z)).sum(1)

    def log_density(self, y, cond=None):
        z, logabsdet = self.to_latent(y)
        return self.prior_log_prob(z) + logabsdet

    def sample_continuous(self, n, cond=None, temperature=1.0, generator=None):
        if self.config.prior == "gaussian":
            z = torch.randn(n, self.dim, generator=generator) * temperature
        else:
            u = torch.rand(n, self.dim, generator=generator).clamp(1e-6, 1 - 1e-6)
            z = (torch.log(u) - torch.log1p(-u)) * temperature
        y, _ = self.from_latent(z.to(self.device, self.dtype))
        return y
