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

    def invert(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The inverse without its log-determinant (sampling; transforms may make it cheaper)."""
        return self.inverse(z, cond)[0]


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

    def invert(self, z, cond=None):
        for transform in reversed(self.transforms):
            z = transform.invert(z, cond)
        return z


# The logit map's default margin for discrete data: small, like the 1e-6 of the RealNVP and MAF
# papers on MNIST, not RealNVP's 0.05 for CIFAR-10. On 8-bit Fashion-MNIST, where most pixels are
# 0, a small margin spreads the bin of 0 over a wide range of logits instead of a sliver that the
# flow must contract (measurements: docs/benchmarks.md).
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
    """Per-channel affine ``z = (x - b) * exp(-log_s)`` (Glow); ``log|det| = -H W sum(log_s)``.

    Data-dependent initialisation is explicit: :meth:`initialize` sets ``b`` and ``log_s`` so that
    a batch comes out with zero mean and unit variance per channel (population std, so a batch of
    one 1x1 map is fine); flows call it through ``Flow.initialize`` before training. A forward
    pass never changes the parameters. Whether the initialisation happened is stored in the
    ``initialized`` buffer (so checkpoints keep it), mirrored in a Python bool.
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


class Standardize(Transform):
    """``z = (x - shift) / scale`` per coordinate of ``(B, D)`` vectors; ``log|det| = -sum log scale``.

    Identity until :meth:`fit` sets ``shift`` and ``scale`` to a training set's mean and standard
    deviation (buffers, saved with the model, so a loaded model scores and samples in the data's
    own units). Weights saved without them load as the identity.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("log_scale", torch.zeros(dim))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        defaults = {prefix + "shift": self.shift, prefix + "log_scale": self.log_scale}
        state_dict = {**defaults, **state_dict}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Set ``shift``/``scale`` to the mean and standard deviation of ``x`` ``(N, D)``."""
        x = x.double().flatten(1)
        self.shift.copy_(x.mean(0))
        self.log_scale.copy_(x.std(0, correction=0).clamp_min(1e-6).log() if len(x) > 1
                             else torch.zeros_like(self.log_scale))

    def forward(self, x, cond=None):
        z = (x - self.shift) * torch.exp(-self.log_scale)
        return z, (-self.log_scale.sum()).expand(x.shape[0]).to(z.dtype)

    def inverse(self, z, cond=None):
        x = z * torch.exp(self.log_scale) + self.shift
        return x, self.log_scale.sum().expand(z.shape[0]).to(x.dtype)
