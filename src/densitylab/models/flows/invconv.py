"""Invertible 1x1 convolution with an LU-decomposed weight (Kingma & Dhariwal, 2018, "Glow:
Generative Flow with Invertible 1x1 Convolutions", section 3.2).

Every pixel's channel vector is multiplied by the same ``C x C`` matrix ``W``, a learned
generalisation of the fixed channel permutations of RealNVP:

    z[:, :, i, j] = W x[:, :, i, j],     log|det dz/dx| = H * W_img * log|det W|

``W`` is parameterised as ``W = P L (U + diag(sign(s) * exp(log|s|)))`` with ``P`` a fixed
permutation, ``L`` unit lower triangular, ``U`` strictly upper triangular and ``log|s|`` learned,
so ``log|det W| = sum(log|s|)`` costs ``O(C)`` instead of ``O(C^3)`` and the sign of the
determinant never changes. It starts as a random rotation (the ``P, L, U`` of the QR factor of a
Gaussian matrix). The inverse uses two triangular solves.
"""

from __future__ import annotations

import torch
from torch import nn

from densitylab.models.flows.transforms import Transform


class InvConv1x1(Transform):
    """``z = W x`` per pixel with ``W = P L (U + diag(sign_s * exp(log_s)))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        rotation = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))[0]
        p, lower, upper = torch.linalg.lu(rotation)
        s = torch.diagonal(upper)
        dtype = torch.get_default_dtype()
        self.register_buffer("permutation", p.to(dtype))  # fixed, but random: saved
        self.register_buffer("sign_s", torch.sign(s).to(dtype))
        self.lower = nn.Parameter(torch.tril(lower, -1).to(dtype))
        self.upper = nn.Parameter(torch.triu(upper, 1).to(dtype))
        self.log_s = nn.Parameter(torch.log(s.abs()).to(dtype))
        ones = torch.ones(channels, channels)
        self.register_buffer("lower_mask", torch.tril(ones, -1), persistent=False)
        self.register_buffer("upper_mask", torch.triu(ones, 1), persistent=False)
        self.register_buffer("eye", torch.eye(channels), persistent=False)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L, U_full)``: unit lower triangular and upper triangular with the ``s`` diagonal."""
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.upper_mask + torch.diag(self.sign_s * torch.exp(self.log_s))
        return lower, upper

    def weight(self) -> torch.Tensor:
        lower, upper = self.factors()
        return self.permutation @ lower @ upper

    def inverse_weight(self) -> torch.Tensor:
        """``W^-1 = U^-1 L^-1 P^T`` by triangular solves."""
        lower, upper = self.factors()
        l_inv_pt = torch.linalg.solve_triangular(lower, self.permutation.T, upper=False,
                                                 unitriangular=True)
        return torch.linalg.solve_triangular(upper, l_inv_pt, upper=True)

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        return (self.log_s.sum() * (x.shape[2] * x.shape[3])).expand(x.shape[0])

    # A matrix product rather than F.conv2d: cuDNN convolutions may run in TF32 on Ampere and
    # later GPUs (torch.backends.cudnn.allow_tf32 defaults to True), which made
    # inverse(forward(x)) miss x by ~1e-3 in float32; matmuls default to full float32.
    def forward(self, x, cond=None):
        return torch.einsum("ij,bjhw->bihw", self.weight(), x), self._logdet(x)

    def inverse(self, z, cond=None):
        return torch.einsum("ij,bjhw->bihw", self.inverse_weight(), z), -self._logdet(z)
