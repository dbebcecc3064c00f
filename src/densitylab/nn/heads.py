"""Output distributions of autoregressive image models: what a network's per-pixel parameters mean.

A head turns ``P`` numbers per sub-pixel (one colour channel of one pixel) into a distribution
over the ``K`` levels ``{0..K-1}``:

- :class:`SoftmaxHead` (``P = K``): a categorical with the parameters as logits.
- :class:`DiscretizedLogisticMixtureHead` (``P = 3M``; Salimans et al. 2017, "PixelCNN++"): a
  mixture of ``M`` logistics on ``[-1, 1]``, discretized into ``K`` bins of width ``2 / (K - 1)``
  centred on the levels, the two edge bins taking the tails, so the ``K`` probabilities sum to 1
  exactly:

      P(k) = sum_m pi_m [sigma((x_k + h - mu_m) / s_m) - sigma((x_k - h - mu_m) / s_m)],
      x_k = 2k / (K - 1) - 1,  h = 1 / (K - 1),  sigma(-inf) = 0 at k = 0, sigma(+inf) = 1 at K - 1.

  The difference of sigmoids is evaluated as ``log sigma(a) + log sigma(-b) + log(1 - e^(b - a))``
  (an identity, not an approximation), so the probabilities stay exact for sharp components.

Every head gives ``log_prob(params, x)`` for training (summed over sub-pixels) and
``level_logits(params)`` (log-probabilities of every level) for sampling and tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HEADS = ("softmax", "logistic-mixture")


class SoftmaxHead(nn.Module):
    """A K-way softmax per sub-pixel."""

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = levels
        self.params_per_channel = levels

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``params (B, C, K, H, W)``, ``x (B, C, H, W)`` -> ``(B,)``.

        The softmax runs over a contiguous last axis (``(B, H, W, C, K)``), which is much
        faster on a CPU than reducing over the strided ``K`` axis.
        """
        params = params.to(torch.promote_types(params.dtype, torch.float32))
        log_probs = params.permute(0, 3, 4, 1, 2).log_softmax(-1)
        picked = log_probs.gather(-1, x.long().permute(0, 2, 3, 1).unsqueeze(-1))
        return picked.flatten(1).sum(1)

    def level_logits(self, params: torch.Tensor) -> torch.Tensor:
        """``(..., K)`` parameters -> ``(..., K)`` log-probabilities of the levels."""
        return params.to(torch.promote_types(params.dtype, torch.float32)).log_softmax(-1)

    @torch.no_grad()
    def initial_bias(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        """``(C, K)``: log of each channel's smoothed histogram of values in ``x``."""
        counts = torch.stack([
            torch.bincount(x[:, c].reshape(-1).long().cpu(), minlength=self.levels).double()
            for c in range(channels)
        ])
        return torch.log((counts + 1.0) / (counts + 1.0).sum(1, keepdim=True)).float()


class DiscretizedLogisticMixtureHead(nn.Module):
    """A mixture of ``components`` discretized logistics per sub-pixel (``P = 3 * components``:
    mixture logits, means, log-scales)."""

    min_log_scale = -7.0
    max_log_scale = 5.0

    def __init__(self, levels: int, components: int = 5) -> None:
        super().__init__()
        if levels < 2 or components < 1:
            raise ValueError("the logistic mixture needs >= 2 levels and >= 1 component")
        self.levels = levels
        self.components = components
        self.params_per_channel = 3 * components
        self.half_bin = 1.0 / (levels - 1)

    def _split(self, params: torch.Tensor, axis: int):
        params = params.to(torch.promote_types(params.dtype, torch.float32))
        logits, means, log_scales = params.split(self.components, dim=axis)
        log_scales = log_scales.clamp(self.min_log_scale, self.max_log_scale)
        return logits.log_softmax(axis), means, log_scales

    def _component_log_probs(self, k: torch.Tensor, means: torch.Tensor,
                             log_scales: torch.Tensor) -> torch.Tensor:
        """log P(level k | component), all tensors broadcast together."""
        centre = k.to(means.dtype) * (2.0 * self.half_bin) - 1.0
        inv_scale = torch.exp(-log_scales)
        upper = inv_scale * (centre - means + self.half_bin)
        lower = inv_scale * (centre - means - self.half_bin)
        middle = (F.logsigmoid(upper) + F.logsigmoid(-lower)
                  + torch.log(-torch.expm1(-2.0 * self.half_bin * inv_scale)))
        first, last = F.logsigmoid(upper), F.logsigmoid(-lower)
        return torch.where(k == 0, first, torch.where(k == self.levels - 1, last, middle))

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``params (B, C, 3M, H, W)``, ``x (B, C, H, W)`` -> ``(B,)``."""
        log_weights, means, log_scales = self._split(params, axis=2)
        k = x.long().unsqueeze(2)
        per_component = log_weights + self._component_log_probs(k, means, log_scales)
        return torch.logsumexp(per_component, dim=2).flatten(1).sum(1)

    def level_logits(self, params: torch.Tensor) -> torch.Tensor:
        """``(..., 3M)`` parameters -> ``(..., K)`` log-probabilities of the levels."""
        log_weights, means, log_scales = self._split(params, axis=-1)
        k = torch.arange(self.levels, device=params.device).view(*([1] * (params.dim() - 1)), -1, 1)
        per_component = log_weights.unsqueeze(-2) + self._component_log_probs(
            k, means.unsqueeze(-2), log_scales.unsqueeze(-2)
        )
        return torch.logsumexp(per_component, dim=-1)

    @torch.no_grad()
    def initial_bias(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        """``(C, 3M)``: equal weights, means at the quantiles of each channel's values, and
        scales a fraction of the spacing between them."""
        m = self.components
        quantiles = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        rows = []
        for c in range(channels):
            values = x[:, c].reshape(-1)[:200_000].double().cpu() * (2.0 * self.half_bin) - 1.0
            means = torch.quantile(values, quantiles)
            log_scale = math.log(max(2.0 / (3 * m), self.half_bin))
            rows.append(torch.cat([torch.zeros(m), means.float(), torch.full((m,), log_scale)]))
        return torch.stack(rows).float()


def make_head(name: str, levels: int, components: int = 5) -> nn.Module:
    if name == "softmax":
        return SoftmaxHead(levels)
    if name == "logistic-mixture":
        return DiscretizedLogisticMixtureHead(levels, components)
    raise ValueError(f"head must be one of {', '.join(HEADS)}, got {name!r}")
