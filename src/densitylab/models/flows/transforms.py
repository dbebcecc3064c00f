"""The transform protocol of densitylab's flows, and the generic transforms built on it.

A :class:`Transform` maps data to noise: ``forward(x, cond=None) -> (z, logabsdet)`` with
``logabsdet = log |det dz/dx|`` per example, and ``inverse(z, cond=None) -> (x, logabsdet)``
with ``logabsdet = log |det dx/dz|``. So ``log p(x) = log p_base(z) + logabsdet(forward)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Transform(nn.Module):
    """An invertible map, data -> noise, with the log-determinant of its Jacobian."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(
        self, z: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class CompositeTransform(Transform):
    """``t_n o ... o t_1``: forward applies the transforms in order, inverse in reverse."""

    def __init__(self, transforms: list[Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x, cond=None):
        total = x.new_zeros(x.shape[0])
        for transform in self.transforms:
            x, logabsdet = transform(x, cond)
            total = total + logabsdet
        return x, total

    def inverse(self, z, cond=None):
        total = z.new_zeros(z.shape[0])
        for transform in reversed(self.transforms):
            z, logabsdet = transform.inverse(z, cond)
            total = total + logabsdet
        return z, total


# The logit map's default margin for discrete data. Small, like the 1e-6 of the RealNVP and MAF
# papers on MNIST, not RealNVP's 0.05 for CIFAR-10: on 8-bit Fashion-MNIST, where most pixels are
# 0, a small margin spreads the bin of 0 over a wide range of logits instead of a sliver that the
# flow must contract. 2-minute Fashion-MNIST runs (benchmarks/fixed_budget.py protocol), bits/dim
# at alpha = 0.05 -> 1e-6: MAF 4.284 -> 3.970, RealNVP 3.726 -> 3.480, Glow 4.110 -> 3.535, NICE
# 5.881 -> 4.220; at 1e-4: MAF 3.945, RealNVP 3.478 (MAF at 0.15: 4.486, 0.01: 4.053, 0: 3.958).
DEFAULT_LOGIT_ALPHA = 1e-4


class LogitTransform(Transform):
    """``y in [0,1) -> logit(alpha + (1 - 2 alpha) y)`` (RealNVP's preprocessing).

    ``log|dz/dy| = log(1 - 2 alpha) - log s - log(1 - s)`` with ``s = alpha + (1 - 2 alpha) y``.
    ``alpha`` keeps the logit finite at the edges of ``[0, 1)``.
    """

    def __init__(self, alpha: float = DEFAULT_LOGIT_ALPHA) -> None:
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def forward(self, x, cond=None):
        # 1 - s from 1 - x, not from s: with a small alpha, s rounds near 1 in float32 and
        # log(1 - s) would lose most of its digits there (1 - x is exact for x >= 1/2)
        s = self.alpha + (1 - 2 * self.alpha) * x
        one_minus_s = self.alpha + (1 - 2 * self.alpha) * (1 - x)
        if self.alpha == 0:
            s, one_minus_s = s.clamp_min(1e-7), one_minus_s.clamp_min(1e-7)
        log_s, log_1ms = torch.log(s), torch.log(one_minus_s)
        logabsdet = math.log(1 - 2 * self.alpha) - log_s - log_1ms
        return log_s - log_1ms, logabsdet.flatten(1).sum(1)

    def inverse(self, z, cond=None):
        s = torch.sigmoid(z)
        x = (s - self.alpha) / (1 - 2 * self.alpha)
        logabsdet = F.logsigmoid(z) + F.logsigmoid(-z) - math.log(1 - 2 * self.alpha)
        return x, logabsdet.flatten(1).sum(1)


class Squeeze(Transform):
    """``(C, H, W) -> (4C, H/2, W/2)``: each 2x2 block of a channel becomes 4 channels."""

    def forward(self, x, cond=None):
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze needs even height and width, got {h}x{w}")
        x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(b, c * 4, h // 2, w // 2), x.new_zeros(b)

    def inverse(self, z, cond=None):
        b, c, h, w = z.shape
        z = z.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return z.reshape(b, c // 4, h * 2, w * 2), z.new_zeros(b)


class Shift(Transform):
    """``z = x + shift`` for a constant ``shift`` (Glow's centring ``y - 0.5``); ``log|det| = 0``."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = float(shift)

    def forward(self, x, cond=None):
        return x + self.shift, x.new_zeros(x.shape[0])

    def inverse(self, z, cond=None):
        return z - self.shift, z.new_zeros(z.shape[0])


class ActNorm(Transform):
    """Per-channel affine ``z = (x - b) * exp(-log_s)`` (Glow), initialised from the first batch.

    Data-dependent initialisation: on the first forward pass in training mode, ``b`` and ``log_s``
    are set so that the batch comes out with zero mean and unit variance per channel (population
    std, so a batch of one 1x1 map is fine). ``log|det| = -H W sum(log_s)``.

    Whether that happened is stored in the ``initialized`` buffer (so checkpoints keep it) and
    mirrored in a Python bool, so the check on every forward costs no device synchronisation; the
    bool is refreshed whenever a state dict is loaded. Flows call :func:`initialize_actnorms`
    from ``initialize_from_data`` so that the trainer's step-0 checkpoint is already initialised.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        self.is_initialized = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.is_initialized = bool(self.initialized)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, correction=0).clamp_min(1e-3)
        self.bias.copy_(mean)
        self.log_scale.copy_(torch.log(std))
        self.initialized.fill_(1)
        self.is_initialized = True

    def forward(self, x, cond=None):
        if self.training and not self.is_initialized:
            self.initialize(x)
        z = (x - self.bias) * torch.exp(-self.log_scale)
        logabsdet = -self.log_scale.sum() * x.shape[2] * x.shape[3]
        return z, logabsdet.expand(x.shape[0])

    def inverse(self, z, cond=None):
        x = z * torch.exp(self.log_scale) + self.bias
        logabsdet = self.log_scale.sum() * z.shape[2] * z.shape[3]
        return x, logabsdet.expand(z.shape[0])


class AsChannels(Transform):
    """Applies a per-channel image transform (ActNorm, the 1x1 convolution) to ``(B, D)``
    vectors, each coordinate a channel of a 1x1 image: ``(B, D) -> (B, D, 1, 1) -> (B, D)``."""

    def __init__(self, transform: Transform) -> None:
        super().__init__()
        self.inner = transform

    def forward(self, x, cond=None):
        z, logabsdet = self.inner(x[:, :, None, None], cond)
        return z.flatten(1), logabsdet

    def inverse(self, z, cond=None):
        x, logabsdet = self.inner.inverse(z[:, :, None, None], cond)
        return x.flatten(1), logabsdet


@torch.no_grad()
def initialize_actnorms(model: nn.Module, x: torch.Tensor, max_images: int = 512) -> None:
    """Data-dependent init of every :class:`ActNorm` in ``model`` (a ``DequantizedFlow``): one
    forward pass of ``log_prob`` in training mode on the first ``max_images`` of ``x``.

    The dequantization noise comes from a fixed-seed generator of its own, so the global RNG is
    untouched and every process of a distributed run initialises identically.
    """
    if not any(isinstance(m, ActNorm) and not m.is_initialized for m in model.modules()):
        return
    was_training = model.training
    model.train()
    try:
        model.log_prob(x[:max_images].to(model.device), generator=torch.Generator().manual_seed(0))
    finally:
        model.train(was_training)
