"""Affine coupling layers (Dinh, Sohl-Dickstein & Bengio, 2017, "Density estimation using Real NVP").

The input is split by a binary mask into a part ``x_a`` that passes unchanged and a part ``x_b``
that is scaled and shifted by functions of ``x_a``:

    z_a = x_a,    z_b = x_b * exp(s(x_a)) + t(x_a),    log|det dz/dx| = sum s(x_a)

Masks: ``checkerboard`` (pixels with even/odd ``i + j``), the half-image masks ``top-bottom``
(rows ``i < H/2`` against the rest) and ``left-right`` (columns ``j < W/2`` against the rest), and
``channel`` (first/second half of the channels). Parity 1 swaps the roles of the two parts, so two
consecutive couplings of opposite parity transform every entry. The RealNVP paper (and the course
notes) find that splitting the image into halves gives worse results than a checkerboard: each
transformed pixel then only sees conditioning pixels far away from it in one direction.
Spatial masks are built once per ``(H, W, device, dtype)`` and cached (not part of the state dict).

The scale is bounded, ``s = scale * tanh(s_raw)`` with a learned per-channel ``scale``, so neither
direction can blow up, and the network's last layer starts at zero so every coupling starts as
the identity.

Also here: Glow's channel coupling (Kingma & Dhariwal, 2018), ``z_b = (x_b + t(x_a)) * sigmoid(
r(x_a) + 2)``, ``log|det| = sum log sigmoid(r + 2)`` (of image channels or vector coordinates);
and the couplings of vectors with the even and odd coordinates as the two parts: NICE's additive
one (Dinh, Krueger & Bengio, 2015), ``z_b = x_b + m(x_a)``, ``log|det| = 0``, and RealNVP's affine
one, ``z_b = x_b * exp(s(x_a)) + t(x_a)``. The vector couplings can take a continuous context
``c``: their networks then read ``(x_a, c)``, which makes the flow a conditional density ``p(x | c)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from densitylab.models.flows.transforms import Transform

SPATIAL_MASKS = ("checkerboard", "top-bottom", "left-right")
MASKS = (*SPATIAL_MASKS, "channel")


def spatial_mask(
    kind: str, height: int, width: int, parity: int, device=None, dtype=torch.float32
) -> torch.Tensor:
    """``(1, 1, H, W)`` mask, 1 on the part that passes unchanged.

    ``checkerboard``: ``(i + j) % 2 == parity``; ``top-bottom``: rows ``i < H/2`` (parity 0) or
    the other rows (parity 1); ``left-right``: columns ``j < W/2`` (parity 0) or the others.
    """
    i = torch.arange(height, device=device)[:, None]
    j = torch.arange(width, device=device)[None, :]
    if kind == "checkerboard":
        keep = (i + j) % 2 == parity
    elif kind == "top-bottom":
        keep = ((2 * i < height) == (parity == 0)).expand(height, width)
    elif kind == "left-right":
        keep = ((2 * j < width) == (parity == 0)).expand(height, width)
    else:
        raise ValueError(f"spatial mask must be one of {', '.join(SPATIAL_MASKS)}, got {kind!r}")
    return keep.to(dtype).view(1, 1, height, width)


def checkerboard(height: int, width: int, parity: int, device=None) -> torch.Tensor:
    """``(1, 1, H, W)`` mask, 1 where ``(i + j) % 2 == parity`` (the part that passes unchanged)."""
    return spatial_mask("checkerboard", height, width, parity, device)


class CouplingNet(nn.Module):
    """``3x3 conv -> ReLU -> (1x1 conv -> ReLU) * n -> 3x3 conv`` (last layer zero-initialised)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, hidden_layers: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU()]
        for _ in range(hidden_layers):
            layers += [nn.Conv2d(hidden, hidden, 1), nn.ReLU()]
        last = nn.Conv2d(hidden, out_channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AffineCoupling(Transform):
    """RealNVP affine coupling with a spatial (``checkerboard``, ``top-bottom``, ``left-right``)
    or ``channel`` mask of a given parity."""

    def __init__(
        self, channels: int, mask: str, parity: int, hidden: int = 64, hidden_layers: int = 1
    ) -> None:
        super().__init__()
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {', '.join(MASKS)}, got {mask!r}")
        if mask == "channel" and (channels < 2 or channels % 2):
            raise ValueError(f"a channel mask needs an even number of channels, got {channels}")
        self.mask_kind, self.parity, self.channels = mask, parity, channels
        if mask in SPATIAL_MASKS:
            in_ch, out_ch = channels + 1, channels
        else:
            in_ch = out_ch = channels // 2
        self.net = CouplingNet(in_ch, 2 * out_ch, hidden, hidden_layers)
        self.scale = nn.Parameter(torch.ones(1, out_ch, 1, 1))
        self._masks: dict[tuple, torch.Tensor] = {}  # (H, W, device, dtype) -> mask; not state

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The cached ``(1, 1, H, W)`` spatial mask for inputs like ``x`` (1 = unchanged)."""
        key = (x.shape[2], x.shape[3], x.device, x.dtype)
        mask = self._masks.get(key)
        if mask is None:
            mask = spatial_mask(self.mask_kind, key[0], key[1], self.parity, x.device, x.dtype)
            self._masks[key] = mask
        return mask

    def _scale_shift(self, conditioner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_s, t = self.net(conditioner).chunk(2, dim=1)
        return self.scale * torch.tanh(raw_s), t

    def _spatial_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.mask(x)
        s, t = self._scale_shift(torch.cat([x * mask, mask.expand(x.shape[0], -1, -1, -1)], 1))
        return s * (1 - mask), t * (1 - mask)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditioning half, transformed half); parity 1 swaps the roles of the halves."""
        first, second = x.chunk(2, dim=1)
        return (first, second) if self.parity == 0 else (second, first)

    def _merge(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b] if self.parity == 0 else [b, a], 1)

    def forward(self, x, cond=None):
        if self.mask_kind != "channel":
            s, t = self._spatial_params(x)
            return x * torch.exp(s) + t, s.flatten(1).sum(1)
        a, b = self._split(x)
        s, t = self._scale_shift(a)
        return self._merge(a, b * torch.exp(s) + t), s.flatten(1).sum(1)

    def inverse(self, z, cond=None):
        if self.mask_kind != "channel":
            s, t = self._spatial_params(z)  # z equals x on the unchanged (mask) part
            return (z - t) * torch.exp(-s), -s.flatten(1).sum(1)
        a, b = self._split(z)
        s, t = self._scale_shift(a)
        return self._merge(a, (b - t) * torch.exp(-s)), -s.flatten(1).sum(1)


SCALE_MIN = 0.01  # Glow coupling scales lie in (SCALE_MIN, 1)


class GlowCoupling(Transform):
    """Glow's affine coupling: the first ``C // 2`` channels ``x_a`` condition the rest ``x_b``.

        (t, r) = NN(x_a),   z_b = (x_b + t) * s,   s = s_min + (1 - s_min) sigmoid(r + 2),
        log|det| = sum log s

``s_min = 0.01`` bounds the scale away from 0, so the inverse (a division by ``s``) amplifies by
at most 100 per coupling: with Glow's unbounded ``sigmoid`` an 8-minute Fashion-MNIST run learned
scales near 0 and sampling overflowed to infinity.

    The scale lies in ``(0, 1)`` (as in Glow), so the data -> noise direction never expands and
    the ``+ 2`` starts it near 0.88; ``NN``'s last layer is zero, so it starts as a fixed
    contraction by ``sigmoid(2)`` with zero shift. (The 1x1 convolutions between couplings mix the
    channels, so no parity is needed.) ``vectors=True`` couples the coordinates of ``(B, D)``
    vectors (first ``D // 2`` against the rest) with an MLP of ``hidden_layers + 1`` hidden
    layers in place of the conv net.
    """

    def __init__(self, channels: int, hidden: int = 64, hidden_layers: int = 1,
                 vectors: bool = False, context_features: int = 0) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"a channel coupling needs at least 2 channels, got {channels}")
        if context_features and not vectors:
            raise ValueError("a context conditions vector couplings only")
        self.split = channels // 2
        self.context_features = context_features
        out = 2 * (channels - self.split)
        self.net = (MLP(self.split + context_features, out, hidden, hidden_layers + 1) if vectors
                    else CouplingNet(self.split, out, hidden, hidden_layers))

    def _shift_log_scale(self, a: torch.Tensor, cond: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        t, r = self.net(with_context(a, cond, self.context_features)).chunk(2, dim=1)
        log_scale = torch.logaddexp(torch.full_like(r, math.log(SCALE_MIN)),
                                    math.log1p(-SCALE_MIN) + F.logsigmoid(r + 2.0))
        return t, log_scale

    def forward(self, x, cond=None):
        a, b = x[:, : self.split], x[:, self.split :]
        t, log_scale = self._shift_log_scale(a, cond)
        z_b = (b + t) * torch.exp(log_scale)
        return torch.cat([a, z_b], 1), log_scale.flatten(1).sum(1)

    def inverse(self, z, cond=None):
        a, b = z[:, : self.split], z[:, self.split :]
        t, log_scale = self._shift_log_scale(a, cond)
        x_b = b * torch.exp(-log_scale) - t
        return torch.cat([a, x_b], 1), -log_scale.flatten(1).sum(1)


def with_context(a: torch.Tensor, cond: torch.Tensor | None, context_features: int) -> torch.Tensor:
    """The conditioner's input: ``a``, with the context ``cond`` appended when the layer takes one
    (a layer built without a context refuses one, and one built with it needs it)."""
    if not context_features:
        if cond is not None:
            raise ValueError("this coupling takes no context")
        return a
    if cond is None or cond.shape != (a.shape[0], context_features):
        raise ValueError(f"this coupling needs a context of shape ({a.shape[0]}, {context_features})")
    return torch.cat([a, cond.to(a.dtype)], 1)


class MLP(nn.Module):
    """``Linear -> ReLU -> (Linear -> ReLU) * (layers - 1) -> Linear`` (last layer zero)."""

    def __init__(self, in_features: int, out_features: int, hidden: int, layers: int) -> None:
        super().__init__()
        sizes = [in_features] + [hidden] * layers
        modules: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            modules += [nn.Linear(a, b), nn.ReLU()]
        last = nn.Linear(sizes[-1], out_features)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*modules, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EvenOddCoupling(Transform):
    """A coupling of vectors ``(B, D)`` whose two parts are the even and the odd coordinates.

    Parity 0 conditions on the even coordinates and transforms the odd ones; parity 1 the
    reverse, so two consecutive couplings of opposite parity transform every coordinate.
    Subclasses give the per-coordinate map of the transformed part: ``_couple(x_b, x_a)`` and
    ``_uncouple(z_b, x_a)``, each returning the new part and its ``log|det|``.
    """

    def __init__(self, dim: int, parity: int, context_features: int = 0) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"a coupling needs at least 2 dimensions, got {dim}")
        self.context_features = context_features
        index = torch.arange(dim)
        self.register_buffer("index_a", index[index % 2 == parity], persistent=False)
        self.register_buffer("index_b", index[index % 2 != parity], persistent=False)

    def _couple(self, x_b, x_a):
        """``x_a`` is the conditioner's input (with the context appended, if any)."""
        raise NotImplementedError

    def _uncouple(self, z_b, x_a):
        raise NotImplementedError

    def _with_part(self, x: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        return x.index_copy(1, self.index_b, part.to(x.dtype))  # bf16/fp16 under autocast

    def forward(self, x, cond=None):
        a = with_context(x[:, self.index_a], cond, self.context_features)
        z_b, logabsdet = self._couple(x[:, self.index_b], a)
        return self._with_part(x, z_b), logabsdet

    def inverse(self, z, cond=None):
        a = with_context(z[:, self.index_a], cond, self.context_features)
        x_b, logabsdet = self._uncouple(z[:, self.index_b], a)
        return self._with_part(z, x_b), logabsdet


class AdditiveCoupling(EvenOddCoupling):
    """NICE's coupling of vectors: ``z_b = x_b + m(x_a)``, ``z_a = x_a``, ``log|det| = 0``.

    ``m`` is an MLP whose last layer starts at zero (identity coupling).
    """

    def __init__(self, dim: int, parity: int, hidden: int = 256, layers: int = 4) -> None:
        super().__init__(dim, parity)
        self.m = MLP(len(self.index_a), len(self.index_b), hidden, layers)

    def _couple(self, x_b, x_a):
        return x_b + self.m(x_a), x_b.new_zeros(x_b.shape[0])

    def _uncouple(self, z_b, x_a):
        return z_b - self.m(x_a), z_b.new_zeros(z_b.shape[0])


class AffineVectorCoupling(EvenOddCoupling):
    """RealNVP's affine coupling of vectors: ``z_b = x_b * exp(s(x_a)) + t(x_a)``,
    ``log|det| = sum s``, with ``s = scale * tanh(s_raw)`` bounded by a learned per-coordinate
    ``scale`` (as :class:`AffineCoupling`) and an MLP whose last layer starts at zero."""

    def __init__(self, dim: int, parity: int, hidden: int = 128, layers: int = 2,
                 context_features: int = 0) -> None:
        super().__init__(dim, parity, context_features)
        width = len(self.index_b)
        self.net = MLP(len(self.index_a) + context_features, 2 * width, hidden, layers)
        self.scale = nn.Parameter(torch.ones(width))

    def _scale_shift(self, x_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_s, t = self.net(x_a).chunk(2, dim=1)
        return self.scale * torch.tanh(raw_s), t

    def _couple(self, x_b, x_a):
        s, t = self._scale_shift(x_a)
        return x_b * torch.exp(s) + t, s.sum(1)

    def _uncouple(self, z_b, x_a):
        s, t = self._scale_shift(x_a)
        return (z_b - t) * torch.exp(-s), -s.sum(1)
