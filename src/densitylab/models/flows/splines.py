"""Monotone rational-quadratic splines (Durkan, Bekasov, Murray & Papamakarios, 2019, "Neural
Spline Flows"), elementwise, on ``[-B, B]`` with identity (linear) tails outside.

A spline with ``K`` bins is given per element by unconstrained widths ``w (K)``, heights ``h (K)``
and inner-knot derivatives ``d (K - 1)``:

    widths  = m_w + (1 - K m_w) softmax(w) * 2B,   heights likewise,   (knots from -B to B)
    d_k     = m_d + softplus(d_k + c),   c = log(exp(1 - m_d) - 1)   (so d = 1 at zero input),
    d_0 = d_K = 1                                                     (matches the linear tails).

In bin ``k`` with knots ``(x_k, y_k)``, width ``w_k``, height ``h_k``, slope ``s_k = h_k / w_k`` and
``xi = (x - x_k) / w_k`` in ``[0, 1]``:

    y     = y_k + h_k [s_k xi^2 + d_k xi (1 - xi)] / [s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)]
    dy/dx = s_k^2 [d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2]
            / [s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)]^2

The inverse solves the quadratic ``a xi^2 + b xi + c = 0`` of the paper's appendix with the
numerically stable root ``xi = 2c / (-b - sqrt(b^2 - 4ac))``. With all-zero inputs the spline is
the identity (uniform bins, unit derivatives), so a zero-initialised network starts as the
identity map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3


def spline_params_per_dim(bins: int) -> int:
    """Unconstrained numbers per element: ``K`` widths, ``K`` heights, ``K - 1`` derivatives."""
    return 3 * bins - 1


def _knots(raw: torch.Tensor, bound: float, minimum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Knot positions ``(..., K + 1)`` from ``-bound`` to ``bound`` and bin sizes ``(..., K)``."""
    bins = raw.shape[-1]
    if minimum * bins >= 1:
        raise ValueError(f"a minimum bin size of {minimum} leaves no room for {bins} bins")
    sizes = minimum + (1 - minimum * bins) * torch.softmax(raw, dim=-1)
    inner = torch.cumsum(sizes[..., :-1], dim=-1) * (2 * bound) - bound
    ends = inner.new_full((*inner.shape[:-1], 1), bound)
    knots = torch.cat([-ends, inner, ends], dim=-1)
    return knots, knots[..., 1:] - knots[..., :-1]


def _derivatives(raw: torch.Tensor) -> torch.Tensor:
    """``(..., K + 1)`` knot derivatives: 1 at both ends, positive inside (1 at zero input)."""
    shift = math.log(math.expm1(1 - MIN_DERIVATIVE))
    inner = MIN_DERIVATIVE + F.softplus(raw + shift)
    return F.pad(inner, (1, 1), value=1.0)


def rational_quadratic_spline(
    inputs: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    inverse: bool = False,
    bound: float = 5.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the spline (or its inverse) elementwise.

    ``inputs (...)``, ``widths``/``heights (..., K)``, ``derivatives (..., K - 1)``, unconstrained.
    Returns ``(outputs, log|d outputs / d inputs|)``, both shaped like ``inputs``. Outside
    ``[-bound, bound]`` the map is the identity (log-derivative 0).
    """
    knots_x, bin_w = _knots(widths, bound, MIN_BIN_WIDTH)
    knots_y, bin_h = _knots(heights, bound, MIN_BIN_HEIGHT)
    slopes_at_knots = _derivatives(derivatives)
    inside = (inputs >= -bound) & (inputs <= bound)
    values = inputs.clamp(-bound, bound).unsqueeze(-1)
    knots = knots_y if inverse else knots_x
    index = (torch.searchsorted(knots.contiguous(), values.contiguous(), right=True) - 1)
    index = index.clamp_(0, widths.shape[-1] - 1)

    x_k, w_k = knots_x.gather(-1, index), bin_w.gather(-1, index)
    y_k, h_k = knots_y.gather(-1, index), bin_h.gather(-1, index)
    d_k, d_k1 = slopes_at_knots.gather(-1, index), slopes_at_knots.gather(-1, index + 1)
    s_k = h_k / w_k
    curvature = d_k1 + d_k - 2 * s_k

    if inverse:
        shifted = values - y_k
        a = h_k * (s_k - d_k) + shifted * curvature
        b = h_k * d_k - shifted * curvature
        c = -s_k * shifted
        discriminant = (b.pow(2) - 4 * a * c).clamp_min(0)
        xi = (2 * c) / (-b - discriminant.sqrt())
    else:
        xi = (values - x_k) / w_k
    between = xi * (1 - xi)
    denominator = s_k + curvature * between
    if inverse:
        outputs = xi * w_k + x_k
    else:
        outputs = y_k + h_k * (s_k * xi.pow(2) + d_k * between) / denominator
    numerator = s_k.pow(2) * (d_k1 * xi.pow(2) + 2 * s_k * between + d_k * (1 - xi).pow(2))
    log_derivative = torch.log(numerator) - 2 * torch.log(denominator)  # of the forward map
    if inverse:
        log_derivative = -log_derivative
    outputs = torch.where(inside, outputs.squeeze(-1), inputs)
    log_derivative = torch.where(inside, log_derivative.squeeze(-1), torch.zeros_like(inputs))
    return outputs, log_derivative
