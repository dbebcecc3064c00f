"""Elementwise mixture-CDF transform: ``z = G(F(x))`` with ``F`` the CDF of a mixture.

The 1D flow of Berkeley's CS294-158 "Deep Unsupervised Learning" (lecture 3 and homework 2: a
flow on 1D data whose transform is the CDF of a mixture of Gaussians, with a uniform prior), and
the mixture-of-logistics CDF of Flow++ (Ho, Chen, Srinivas, Duan & Abbeel, 2019), which composes
it with the inverse sigmoid so the prior can be a logistic.

Per dimension ``d`` (``x`` has shape ``(B, D)``) the mixture of ``K`` components is

    F(x) = sum_k w_k C((x - mu_k) / s_k),   f(x) = F'(x) = sum_k w_k c((x - mu_k) / s_k) / s_k,

with ``w = softmax(logits)``, ``s_k = exp(clamp(log_s_k, MIN_LOG_SCALE, MAX_LOG_SCALE))`` and
``C``/``c`` the standard normal (``kind="gaussian"``) or logistic (``kind="logistic"``) CDF/pdf.
Everything is computed in log space: ``log F = logsumexp_k(log w_k + log C(u_k))`` and
``log(1 - F) = logsumexp_k(log w_k + log(1 - C(u_k)))`` (``log_ndtr`` / ``logsigmoid``), so both
tails keep full relative precision. Both are clamped to ``[log(tiny), 0]`` of the dtype, i.e.
``F`` in ``[eps, 1 - eps]`` with ``eps = torch.finfo(dtype).tiny``.

The latent ``z = G(F)`` depends on the prior (``priors.py``):

- ``uniform``: ``z = F``,                  ``log|dz/dx| = log f``;
- ``logistic``: ``z = logit F = log F - log(1 - F)``,  ``log|dz/dx| = log f - log F - log(1-F)``;
- ``gaussian``: ``z = Phi^{-1}(F)`` (through the smaller of ``F``, ``1 - F``: ``Phi^{-1}(1 - F) =
  -Phi^{-1}(F)``), ``log|dz/dx| = log f - log N(z; 0, 1)``.

In each case ``log p_prior(z) + log|dz/dx| = log f(x)``, also where the clamp bit: the flow's
density is exactly the mixture density. The log-determinant sums over ``D``.

Parameters are learned per dimension (``conditional=False``: ``(D, K)`` logits, means, log-scales)
or given per example (``conditional=True``: ``cond`` of shape ``(B, D, 3K)`` laid out as
``[logits | means | log-scales]``, e.g. from an autoregressive conditioner, see ``arflow.py``).

Inverse: ``F`` is increasing, so ``x`` solves ``logit F(x) = logit t`` (``t = G^{-1}(z)``) by
vectorised bisection. Component ``k`` reaches ``t`` at ``mu_k + s_k Q(t)`` (``Q`` the standard
quantile), so every component's CDF is ``<= t`` at the smallest of these points and ``>= t`` at the
largest, and ``[min_k, max_k]`` brackets the root of the mixture; the iteration count is
``ceil(log2(width / tol))`` for the widest bracket of the batch, with ``tol = 1e-10`` in float64
and ``1e-6`` in float32 (absolute). The log-determinant of the inverse is ``-log|dz/dx|`` at the
solution. When gradients are on, the solution carries implicit-function gradients
``dx = -(dG(x; theta) - dlogit t) / G'(x)``, so the inverse is differentiable too.

Round trips hold where the latent resolves ``F``: the uniform latent ``z = F`` rounds to 1 once
``1 - F`` drops below the dtype's epsilon (about 8 sigma out in float64, 5 in float32), so far in the
upper tail ``inverse(forward(x))`` is not ``x``; the Gaussian and logistic latents, computed from
``log(1 - F)``, keep both tails down to ``eps``. The density is exact everywhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from densitylab.models.flows.transforms import Transform

KINDS = ("gaussian", "logistic")
LATENTS = ("uniform", "gaussian", "logistic")
MIN_LOG_SCALE = -7.0  # s >= 9.1e-4
MAX_LOG_SCALE = 7.0  # s <= 1097
TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-6}
MAX_BISECTION_STEPS = 200
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _floor(dtype: torch.dtype) -> float:
    """``log eps``: the clamp of ``log F`` and ``log(1 - F)``."""
    return math.log(torch.finfo(dtype).tiny)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def check_latent(prior: str) -> str:
    if prior not in LATENTS:
        raise ValueError(f"prior must be one of {', '.join(LATENTS)}, got {prior!r}")
    return prior


def split_params(
    params: torch.Tensor, n_components: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(..., 3K)`` raw parameters -> log-weights, means, clamped log-scales, each ``(..., K)``."""
    if params.shape[-1] != 3 * n_components:
        raise ValueError(f"expected {3 * n_components} mixture parameters per dimension "
                         f"(K={n_components}), got {params.shape[-1]}")
    logits, means, log_scales = params.split(n_components, -1)
    return (torch.log_softmax(logits, -1), means,
            log_scales.clamp(MIN_LOG_SCALE, MAX_LOG_SCALE))


def mixture_log_cdf(
    x: torch.Tensor, log_w: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor, kind: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log F(x), log(1 - F(x)), log f(x))`` elementwise; mixture parameters ``(..., K)``
    broadcast against ``x[..., None]``. ``log F`` and ``log(1 - F)`` are clamped to ``[log eps, 0]``."""
    u = (x.unsqueeze(-1) - means) * torch.exp(-log_scales)
    if kind == "gaussian":
        log_cdf, log_sf = torch.special.log_ndtr(u), torch.special.log_ndtr(-u)
        log_pdf = -0.5 * u.pow(2) - _HALF_LOG_2PI
    else:
        log_cdf, log_sf = F.logsigmoid(u), F.logsigmoid(-u)
        log_pdf = log_cdf + log_sf
    floor = _floor(x.dtype)
    log_f = torch.logsumexp(log_w + log_pdf - log_scales, -1)
    log_F = torch.logsumexp(log_w + log_cdf, -1).clamp(floor, 0.0)  # rounding can pass 0
    log_S = torch.logsumexp(log_w + log_sf, -1).clamp(floor, 0.0)
    return log_F, log_S, log_f


def latent_from_cdf(
    log_F: torch.Tensor, log_S: torch.Tensor, log_f: torch.Tensor, prior: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``z = G(F)`` and ``log|dz/dx|`` elementwise, from ``log F``, ``log(1 - F)``, ``log f``."""
    if prior == "uniform":
        return torch.exp(log_F), log_f
    if prior == "logistic":
        return log_F - log_S, log_f - log_F - log_S
    smaller = torch.special.ndtri(torch.exp(torch.minimum(log_F, log_S)))  # <= 0
    z = torch.where(log_F <= log_S, smaller, -smaller)
    return z, log_f + 0.5 * z.pow(2) + _HALF_LOG_2PI


def cdf_from_latent(z: torch.Tensor, prior: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log t, log(1 - t))`` with ``t = G^{-1}(z)``, clamped at ``log eps`` like the forward."""
    if prior == "uniform":
        t = z.clamp(0, 1)
        log_t, log_s = torch.log(t), torch.log1p(-t)
    elif prior == "logistic":
        log_t, log_s = F.logsigmoid(z), F.logsigmoid(-z)
    else:
        log_t, log_s = torch.special.log_ndtr(z), torch.special.log_ndtr(-z)
    floor = _floor(z.dtype)
    return log_t.clamp_min(floor), log_s.clamp_min(floor)


def standard_quantile(log_t: torch.Tensor, log_s: torch.Tensor, kind: str) -> torch.Tensor:
    """``Q(t)`` of the standard component (``log_s = log(1 - t)``), accurate in both tails."""
    if kind == "logistic":
        return log_t - log_s
    smaller = torch.special.ndtri(torch.exp(torch.minimum(log_t, log_s)))
    return torch.where(log_t <= log_s, smaller, -smaller)


def mixture_forward(
    x: torch.Tensor, log_w: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor,
    kind: str, prior: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``z`` and the elementwise ``log|dz/dx|`` (not summed)."""
    return latent_from_cdf(*mixture_log_cdf(x, log_w, means, log_scales, kind), prior)


def mixture_solve(
    z: torch.Tensor, log_w: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor,
    kind: str, prior: str, tolerance: float | None = None,
) -> torch.Tensor:
    """``x`` with ``G(F(x)) = z`` elementwise, by bisection within ``tolerance`` (see the module
    docstring); differentiable through the implicit function theorem."""
    tol = tolerance if tolerance is not None else TOLERANCES.get(z.dtype, 1e-6)
    with torch.no_grad():
        log_t, log_s = cdf_from_latent(z, prior)
        target = log_t - log_s  # logit t
        corners = means + torch.exp(log_scales) * standard_quantile(log_t, log_s, kind).unsqueeze(-1)
        lo, hi = corners.amin(-1) - tol, corners.amax(-1) + tol
        width = float((hi - lo).max()) if z.numel() else 0.0
        steps = min(MAX_BISECTION_STEPS, max(0, math.ceil(math.log2(max(width, tol) / tol))))
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            log_F, log_S, _ = mixture_log_cdf(mid, log_w, means, log_scales, kind)
            below = (log_F - log_S) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        x = 0.5 * (lo + hi)
    tracked = [t for t in (z, log_w, means, log_scales) if t.requires_grad]
    if not (torch.is_grad_enabled() and tracked):
        return x
    # implicit gradient: value x, derivative -(dG - dtarget) / G'(x) with G = logit F
    log_F, log_S, log_f = mixture_log_cdf(x, log_w, means, log_scales, kind)
    log_t, log_s = cdf_from_latent(z, prior)
    residual = (log_F - log_S) - (log_t - log_s)
    inv_slope = torch.exp(-(log_f - log_F - log_S)).detach().clamp(max=1e30)
    return x - (residual - residual.detach()) * inv_slope


class MixtureCDF(Transform):
    """``z = G(F(x))`` per dimension of ``x`` ``(B, D)``; see the module docstring.

    ``conditional=False``: ``dim`` sets of learned ``(logits, means, log_scales)``, each ``(D, K)``.
    ``conditional=True``: no parameters; ``cond`` ``(B, D, 3K)`` gives them per example.
    """

    def __init__(
        self,
        dim: int | None,
        n_components: int = 5,
        kind: str = "gaussian",
        prior: str = "uniform",
        conditional: bool = False,
        tolerance: float | None = None,
    ) -> None:
        super().__init__()
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components = n_components
        self.kind = check_kind(kind)
        self.prior = check_latent(prior)
        self.conditional = conditional
        self.tolerance = tolerance
        if not conditional:
            if dim is None or dim < 1:
                raise ValueError("an unconditional MixtureCDF needs dim >= 1")
            means, log_scales = standard_init(dim, n_components)
            self.logits = nn.Parameter(torch.zeros(dim, n_components))
            self.means = nn.Parameter(means)
            self.log_scales = nn.Parameter(log_scales)

    def mixture(self, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-weights, means and clamped log-scales, ``(D, K)`` or ``(B, D, K)``."""
        if self.conditional:
            if cond is None:
                raise ValueError("a conditional MixtureCDF needs its parameters as cond (B, D, 3K)")
            return split_params(cond, self.n_components)
        if cond is not None:
            raise ValueError("this MixtureCDF learns its own parameters and takes no cond")
        return (torch.log_softmax(self.logits, -1), self.means,
                self.log_scales.clamp(MIN_LOG_SCALE, MAX_LOG_SCALE))

    def forward(self, x, cond=None):
        z, logabsdet = mixture_forward(x, *self.mixture(cond), self.kind, self.prior)
        return z, logabsdet.flatten(1).sum(1)

    def solve(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` with ``forward(x)[0] == z`` (bisection, see the module docstring)."""
        return mixture_solve(z, *self.mixture(cond), self.kind, self.prior, self.tolerance)

    def inverse(self, z, cond=None):
        x = self.solve(z, cond)
        return x, -self.forward(x, cond)[1]

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent init (unconditional only): means at the quantiles of ``x``, scales from
        its standard deviation (:func:`quantile_init`)."""
        if not self.conditional and len(x) > 0:
            self.set_mixture(*quantile_init(x.flatten(1), self.n_components))

    @torch.no_grad()
    def set_mixture(self, means: torch.Tensor, log_scales: torch.Tensor) -> None:
        """Equal weights, the given ``(D, K)`` means and log-scales (unconditional only)."""
        self.logits.zero_()
        self.means.copy_(means)
        self.log_scales.copy_(log_scales.clamp(MIN_LOG_SCALE, MAX_LOG_SCALE))


def spread_init(dim: int, n_components: int, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Means at the centres of ``K`` equal bins of ``[low, high)``, scales half a bin (a nearly flat
    density over the interval): ``(D, K)`` each."""
    width = (high - low) / n_components
    means = low + width * (torch.arange(n_components, dtype=torch.float64) + 0.5)
    log_scales = torch.full((n_components,), math.log(width / 2), dtype=torch.float64)
    return (means.expand(dim, -1).float().clone(), log_scales.expand(dim, -1).float().clone())


def standard_init(dim: int, n_components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`quantile_init` for standard normal data: means at ``Phi^{-1}((k + 1/2) / K)``,
    scales ``1 / sqrt(K)``: ``(D, K)`` each."""
    levels = (torch.arange(n_components, dtype=torch.float64) + 0.5) / n_components
    means = torch.special.ndtri(levels).expand(dim, -1)
    log_scales = torch.full((dim, n_components), -0.5 * math.log(n_components))
    return means.float().clone(), log_scales


def quantile_init(y: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Means at the ``(k + 1/2) / K`` quantiles of ``y`` ``(N, D)`` per dimension, scales
    ``std / sqrt(K)`` (the data's Gaussian fit for ``K = 1``): ``(D, K)`` each."""
    y = y.detach().double()
    levels = (torch.arange(n_components, dtype=torch.float64, device=y.device) + 0.5) / n_components
    means = torch.quantile(y, levels, dim=0).T  # (D, K)
    std = y.std(0).clamp_min(1e-3) if len(y) > 1 else torch.ones_like(y[0])
    log_scales = torch.log(std / math.sqrt(n_components)).unsqueeze(1).expand(-1, n_components)
    return means.float(), log_scales.float().clone()
