"""RealNVP for images (Dinh, Sohl-Dickstein & Bengio, 2017, "Density estimation using Real NVP").

Data ``y in [0,1)^D`` (dequantized, see ``flow.py``) is first mapped by
``logit(alpha + (1 - 2 alpha) y)``; then a multi-scale stack of affine couplings maps it to
``z ~ N(0, I)``. Each scale but the last applies 3 checkerboard couplings, a squeeze
``(C, H, W) -> (4C, H/2, W/2)``, 3 channel couplings, and factors out half of the channels
(they go straight to the prior); the last scale applies 4 checkerboard couplings. The option
``mask`` replaces the checkerboard by a ``top-bottom`` or ``left-right`` half-image mask
(``coupling.py``), to compare them at the same budget (the paper: halves do worse). So

    log p_Y(y) = log N(z; 0, I) + log|det dlogit/dy| + sum_k log|det J_k|.

Every coupling is followed by ActNorm (Glow's data-initialised per-channel affine map), in place
of RealNVP's batch normalisation, so a model's output does not depend on the batch; it is
initialised on the data by ``Flow.initialize``, before the first step. The multi-scale
factor-out is the one Glow uses (``multiscale.py``); the model is a :class:`Flow` built by
:func:`realnvp`, not a class of its own. Scales are
bounded (``scale * tanh``). ``prior="logistic"`` with ``alpha=0`` makes the identity flow exactly
uniform on ``[0,1)^D``, a sanity anchor for the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from densitylab.models.base import register_model
from densitylab.models.flows.coupling import SPATIAL_MASKS, AffineCoupling
from densitylab.models.flows.flow import Flow
from densitylab.models.flows.multiscale import MultiScale
from densitylab.models.flows.transforms import (
    DEFAULT_LOGIT_ALPHA,
    ActNorm,
    CompositeTransform,
    LogitTransform,
    Squeeze,
    Transform,
)


@dataclass
class RealNVPConfig:
    """``n_scales`` needs H and W divisible by ``2 ** (n_scales - 1)``. ``mask`` is the spatial
    mask used before each squeeze and at the last scale: ``checkerboard``, ``top-bottom`` or
    ``left-right`` (channel masks after a squeeze stay). The defaults (3 scales of narrow coupling
    networks) are the best measured at a fixed CPU budget (docs/benchmarks.md)."""

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


def coupling_stack(channels: int, mask: str, count: int, config: RealNVPConfig) -> list[Transform]:
    """``count`` affine couplings of alternating parity, each followed by ActNorm if configured."""
    layers: list[Transform] = []
    for k in range(count):
        layers.append(
            AffineCoupling(channels, mask, k % 2, config.hidden_channels, config.hidden_layers)
        )
        if config.actnorm:
            layers.append(ActNorm(channels))
    return layers


def realnvp_transform(shape: tuple[int, int, int], config: RealNVPConfig) -> MultiScale:
    """RealNVP's multi-scale stack of couplings on ``(C, H, W)`` images (after the logit)."""
    if min(config.n_scales, config.couplings_per_mask, config.final_couplings,
           config.hidden_channels) < 1 or config.hidden_layers < 0:
        raise ValueError("n_scales, couplings and hidden_channels must be >= 1, hidden_layers >= 0")
    if config.mask not in SPATIAL_MASKS:
        raise ValueError(f"mask must be one of {', '.join(SPATIAL_MASKS)}, got {config.mask!r}")
    channels, height, width = shape
    stages: list[Transform] = []
    out_shapes: list[tuple[int, int, int]] = []
    for _ in range(config.n_scales - 1):
        if height % 2 or width % 2:
            raise ValueError(
                f"n_scales={config.n_scales} cannot squeeze {height}x{width} images; lower n_scales"
            )
        layers = coupling_stack(channels, config.mask, config.couplings_per_mask, config)
        layers.append(Squeeze())
        channels, height, width = channels * 4, height // 2, width // 2
        layers += coupling_stack(channels, "channel", config.couplings_per_mask, config)
        stages.append(CompositeTransform(layers))
        out_shapes.append((channels // 2, height, width))
        channels = channels - channels // 2
    stages.append(CompositeTransform(coupling_stack(channels, config.mask, config.final_couplings, config)))
    out_shapes.append((channels, height, width))
    return MultiScale(stages, out_shapes)


@register_model("realnvp", "RealNVP: logit preprocessing, multi-scale affine couplings "
                "(checkerboard or half-image + channel masks), ActNorm, Gaussian prior; "
                "dequantization bound", config=RealNVPConfig, default_lr=3e-3,
                data_kinds=frozenset({"image"}))
def realnvp(config: RealNVPConfig, shape: tuple[int, int, int], levels: int) -> Flow:
    """RealNVP on images: ``Flow(logit -> multi-scale couplings -> N(0, I))``."""
    if config.prior not in ("gaussian", "logistic"):
        raise ValueError(f"prior must be 'gaussian' or 'logistic', got {config.prior!r}")
    return Flow(shape, levels, realnvp_transform(shape, config), prior=config.prior,
                preprocess=LogitTransform(config.alpha), dequantization=config.dequantization,
                flatten=False, latent_shape=(int(shape[0] * shape[1] * shape[2]),))
