"""Variational dequantization (Ho, Chen, Srinivas, Duan & Abbeel, 2019, "Flow++: Improving
flow-based generative models with variational dequantization and architecture design").

Uniform dequantization adds ``u ~ U[0, 1)^D`` to integer data ``x in {0..K-1}^D``; Flow++ instead
draws ``u`` from a learned distribution ``q(u | x)`` on ``(0, 1)^D``:

    eps ~ N(0, I),   e = g(eps; x),   u = sigmoid(e),   y = (x + u) / K

where ``g`` is a conditional flow: a per-dimension affine map ``e_0 = mu + sigma * eps``, then
affine couplings ``e_b -> e_b * exp(s) + t`` whose networks ``(s, t)`` also see a feature map ``h``
of the data, computed from ``x / K`` (centred: ``(x + 1/2) / K - 1/2``) by a conv net for images
``(C, H, W)`` or an MLP for vectors ``(D,)`` and shared by all couplings. The first coupling is
elementwise (its network sees only ``h``); the others alternate checkerboard masks (images) or
even/odd masks (vectors). Scales are bounded, ``s = scale * tanh(raw_s)``, as in ``coupling.py``.
By the change of variables, the density of ``u`` given ``x`` is

    log q(u | x) = log N(eps; 0, I) - log|det de/deps| - sum_i log sigmoid'(e_i),
    log sigmoid'(e) = log sigmoid(e) + log sigmoid(-e),

and any such ``q`` gives a lower bound on the log-likelihood of the discrete data (see
``flow.py``), trained jointly with the model through its ``log_prob``:

    log P(x) >= E_{u ~ q}[ log p_Y((x + u) / K) - D log K - log q(u | x) ].

Initialisation: the couplings' last layers are zero, so ``e = sigma * eps`` and ``u`` is
logistic-normal. ``sigma = 1.75`` maximises the entropy of ``sigmoid(sigma * eps)``: ``q`` starts
within 0.01 nats/dim of ``U(0, 1)`` (KL), so the bound starts almost where uniform dequantization's
does.

Rounding: ``u`` and ``y`` are computed in float64, then ``y`` is cast to the model's dtype and
clamped to the representable values of its bin, ``[x / K, (x + 1) / K)``, and to ``(0, 1)``. The
clamp moves ``y`` by at most one unit in the last place, and only when ``u`` lies within that
distance of 0 or 1 (where ``sigmoid`` saturates or the cast rounds onto the bin's edge); ``log_q``
is that of the unclamped ``u`` and is computed from ``e`` with ``logsigmoid``, so it stays finite.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INIT_SIGMA = 1.75  # argmax over sigma of the entropy of sigmoid(sigma * eps), eps ~ N(0, 1)


def _zero_last(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class _ConditionalCoupling(nn.Module):
    """``e -> e * exp(s) + t`` where ``mask == 0``, with ``(s, t) = net([e * mask, mask, h])``.

    ``mask`` (``(1, 1, H, W)`` for images, ``(1, D)`` for vectors) is 1 on the part that passes
    unchanged; an all-zero mask makes the layer elementwise, and its net then sees only the
    features ``h`` of ``x``. ``s = scale * tanh(raw_s)`` is bounded; the last layer starts at zero,
    so the layer starts as the identity.
    """

    def __init__(self, mask: torch.Tensor, channels: int, features: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("mask", mask, persistent=False)  # rebuilt from the shape
        self.sees_e = bool(mask.any())
        if mask.dim() == 4:  # images: channels = C
            extra = channels + 1 if self.sees_e else 0
            self.net = nn.Sequential(
                nn.Conv2d(features + extra, hidden, 3, padding=1), nn.ReLU(),
                nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                _zero_last(nn.Conv2d(hidden, 2 * channels, 3, padding=1)),
            )
            self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))
        else:  # vectors: channels = D
            extra = channels if self.sees_e else 0
            self.net = nn.Sequential(
                nn.Linear(features + extra, hidden), nn.ReLU(),
                nn.Linear(hidden, hidden), nn.ReLU(),
                _zero_last(nn.Linear(hidden, 2 * channels)),
            )
            self.scale = nn.Parameter(torch.ones(1, channels))

    def forward(self, e: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.mask.to(e.dtype)
        if not self.sees_e:
            inputs = h
        elif e.dim() == 4:
            inputs = torch.cat([e * mask, mask.expand(e.shape[0], -1, -1, -1), h], 1)
        else:
            inputs = torch.cat([e * mask, h], 1)
        raw_s, t = self.net(inputs).chunk(2, dim=1)
        s = self.scale * torch.tanh(raw_s) * (1 - mask)
        return e * torch.exp(s) + t * (1 - mask), s.flatten(1).sum(1)


def _masks(shape: tuple[int, ...], n_couplings: int) -> list[torch.Tensor]:
    """An all-zero (elementwise) mask, then ``n_couplings`` alternating checkerboard (images) or
    even/odd (vectors) masks; all-zero masks where a single position leaves nothing to split."""
    if len(shape) == 3:
        _, height, width = shape
        i = torch.arange(height)[:, None]
        j = torch.arange(width)[None, :]
        split = height * width > 1
        zero = torch.zeros(1, 1, height, width)
        alternating = [((i + j) % 2 == k % 2).float().view(1, 1, height, width) if split else zero
                       for k in range(n_couplings)]
    else:
        (dims,) = shape
        index = torch.arange(dims)[None, :]
        zero = torch.zeros(1, dims)
        alternating = [(index % 2 == k % 2).float() if dims > 1 else zero for k in range(n_couplings)]
    return [zero, *alternating]


def _clamp_to_bin(y: torch.Tensor, x: torch.Tensor, levels: int) -> torch.Tensor:
    """``y`` (any float dtype) clamped to the values of its dtype in ``[x / K, (x + 1) / K)`` and
    ``(0, 1)``: the cast of ``(x + u) / K`` can round onto the upper edge of the bin."""
    dtype = y.dtype
    x64 = x.double()
    low64, high64 = x64 / levels, (x64 + 1) / levels
    low, high = low64.to(dtype), high64.to(dtype)
    low = torch.where(low.double() < low64, torch.nextafter(low, torch.full_like(low, math.inf)), low)
    high = torch.where(high.double() >= high64, torch.nextafter(high, torch.full_like(high, -math.inf)),
                       high)
    low = low.clamp_min(torch.finfo(dtype).tiny)
    return torch.where(y > high, high, torch.where(y < low, low, y))  # full gradient where inside


class VariationalDequantizer(nn.Module):
    """``q(u | x)``: ``u = sigmoid(g(eps; x))``, ``eps ~ N(0, I)``, ``g`` a conditional flow.

    ``forward(x, generator, dtype) -> (y, log_q)`` like :class:`UniformDequantizer`, with
    ``y = (x + u) / K`` in ``dtype`` and ``log_q = log q(u | x)`` per example.
    """

    def __init__(self, shape: tuple[int, ...], levels: int, hidden: int = 32, n_couplings: int = 4) -> None:
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (1, 3):
            raise ValueError(f"variational dequantization needs a shape (C, H, W) or (D,), got {shape}")
        if levels < 2:
            raise ValueError(f"variational dequantization needs discrete data (levels >= 2), got {levels}")
        if hidden < 1 or n_couplings < 0:
            raise ValueError(f"hidden must be >= 1 and n_couplings >= 0, got {hidden}, {n_couplings}")
        self.shape, self.levels = shape, int(levels)
        self.loc = nn.Parameter(torch.zeros(shape))
        self.log_sigma = nn.Parameter(torch.full(shape, math.log(INIT_SIGMA)))
        channels = shape[0]
        if len(shape) == 3:
            self.features = nn.Sequential(
                nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            )
        else:
            self.features = nn.Sequential(
                nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
            )
        self.couplings = nn.ModuleList(
            _ConditionalCoupling(mask, channels, hidden, hidden) for mask in _masks(shape, n_couplings)
        )

    @property
    def param_dtype(self) -> torch.dtype:
        return self.loc.dtype

    def noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``eps ~ N(0, I)`` shaped like ``x``, drawn on the generator's device, then moved."""
        device = generator.device if generator is not None else x.device
        eps = torch.randn(x.shape, generator=generator, device=device, dtype=self.param_dtype)
        return eps.to(x.device)

    def flow(self, eps: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``e = g(eps; x)`` and ``log|det de/deps|`` per example."""
        h = self.features((x.to(eps.dtype) + 0.5) / self.levels - 0.5)
        e = self.loc + torch.exp(self.log_sigma) * eps
        logabsdet = self.log_sigma.sum().expand(eps.shape[0])
        for coupling in self.couplings:
            e, ld = coupling(e, h)
            logabsdet = logabsdet + ld
        return e, logabsdet

    def u_from_noise(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``u = sigmoid(g(eps; x))`` (float64, before any clamping) and ``log q(u | x)``."""
        e, logabsdet = self.flow(eps, x)
        log_normal = (-0.5 * eps.pow(2) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
        log_sigmoid_grad = (F.logsigmoid(e) + F.logsigmoid(-e)).flatten(1).sum(1)
        return torch.sigmoid(e.double()), log_normal - logabsdet - log_sigmoid_grad

    def from_noise(
        self, x: torch.Tensor, eps: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, log_q)`` for given noise ``eps``: the deterministic part of :meth:`forward`."""
        u, log_q = self.u_from_noise(x, eps)
        y = _clamp_to_bin(((x.double() + u) / self.levels).to(dtype), x, self.levels)
        return y, log_q.to(dtype)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.from_noise(x, self.noise(x, generator), dtype)
