"""Affine coupling layers (Dinh, Sohl-Dickstein & Bengio, 2017, "Density estimation using Real NVP").

The input is split by a binary mask into a part ``x_a`` that passes unchanged and a part ``x_b``
that is scaled and shifted by functions of ``x_a``:

    z_a = x_a,    z_b = x_b * exp(s(x_a)) + t(x_a),    log|det dz/dx| = sum s(x_a)

Masks: ``checkerboard`` (pixels with even/odd ``i + j``) and ``channel`` (first/second half of the
channels). The scale is bounded, ``s = scale * tanh(s_raw)`` with a learned per-channel ``scale``,
so neither direction can blow up, and the network's last layer starts at zero so every coupling
starts as the identity.
"""

from __future__ import annotations

import torch
from torch import nn

from densitylab.models.flows.transforms import Transform


def checkerboard(height: int, width: int, parity: int, device=None) -> torch.Tensor:
    """``(1, 1, H, W)`` mask, 1 where ``(i + j) % 2 == parity`` (the part that passes unchanged)."""
    i = torch.arange(height, device=device)[:, None]
    j = torch.arange(width, device=device)[None, :]
    return ((i + j) % 2 == parity).float().view(1, 1, height, width)


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
    """RealNVP affine coupling with a ``checkerboard`` or ``channel`` mask of a given parity."""

    def __init__(
        self, channels: int, mask: str, parity: int, hidden: int = 64, hidden_layers: int = 1
    ) -> None:
        super().__init__()
        if mask not in ("checkerboard", "channel"):
            raise ValueError(f"mask must be 'checkerboard' or 'channel', got {mask!r}")
        if mask == "channel" and (channels < 2 or channels % 2):
            raise ValueError(f"a channel mask needs an even number of channels, got {channels}")
        self.mask_kind, self.parity, self.channels = mask, parity, channels
        if mask == "checkerboard":
            in_ch, out_ch = channels + 1, channels
        else:
            in_ch = out_ch = channels // 2
        self.net = CouplingNet(in_ch, 2 * out_ch, hidden, hidden_layers)
        self.scale = nn.Parameter(torch.ones(1, out_ch, 1, 1))

    def _scale_shift(self, conditioner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_s, t = self.net(conditioner).chunk(2, dim=1)
        return self.scale * torch.tanh(raw_s), t

    def _checkerboard_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = checkerboard(x.shape[2], x.shape[3], self.parity, x.device).to(x.dtype)
        s, t = self._scale_shift(torch.cat([x * mask, mask.expand(x.shape[0], -1, -1, -1)], 1))
        return s * (1 - mask), t * (1 - mask)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditioning half, transformed half); parity 1 swaps the roles of the halves."""
        first, second = x.chunk(2, dim=1)
        return (first, second) if self.parity == 0 else (second, first)

    def _merge(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b] if self.parity == 0 else [b, a], 1)

    def forward(self, x, cond=None):
        if self.mask_kind == "checkerboard":
            s, t = self._checkerboard_params(x)
            return x * torch.exp(s) + t, s.flatten(1).sum(1)
        a, b = self._split(x)
        s, t = self._scale_shift(a)
        return self._merge(a, b * torch.exp(s) + t), s.flatten(1).sum(1)

    def inverse(self, z, cond=None):
        if self.mask_kind == "checkerboard":
            s, t = self._checkerboard_params(z)  # z equals x on the unchanged (mask) part
            return (z - t) * torch.exp(-s), -s.flatten(1).sum(1)
        a, b = self._split(z)
        s, t = self._scale_shift(a)
        return self._merge(a, (b - t) * torch.exp(-s)), -s.flatten(1).sum(1)
