"""Bits/dim of a model on a set of images: exact for autoregressive models, the dequantization
bound for flows (one fixed, seeded noise sample per image), or with ``iw_samples > 1`` the
importance-weighted estimate over that many dequantization samples."""

from __future__ import annotations

import math

import torch

from densitylab.models.base import DensityModel


@torch.no_grad()
def bits_per_dim(
    model: DensityModel,
    images: torch.Tensor,
    batch_size: int = 256,
    seed: int = 0,
    iw_samples: int = 1,
    labels: torch.Tensor | None = None,
) -> float:
    """Mean bits/dim over ``images`` (uint8/int ``(N, C, H, W)``); ``labels`` for
    class-conditional models."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    device = model.device
    total = 0.0
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device).long()
            y = None if labels is None else labels[start : start + batch_size].to(device)
            if model.family == "flow" and iw_samples > 1:
                log_p = model.log_prob_iw(x, iw_samples, generator=generator)
            else:
                log_p = model.log_prob(x, y, generator=generator)
            total += float(log_p.double().sum())
    finally:
        model.train(was_training)
    return -total / (len(images) * model.dim * math.log(2))
