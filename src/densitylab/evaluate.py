"""Bits/dim of a model on a set of images: exact for autoregressive models, the dequantization
bound for flows (one fixed, seeded noise sample per image), or with ``iw_samples > 1`` the
importance-weighted estimate over that many dequantization samples. For continuous data (the toys,
``levels == 0``) :func:`nats_per_dim` gives the negative log-density per dimension instead."""

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
            x = images[start : start + batch_size].to(device)
            x = x if x.dtype.is_floating_point else x.long()
            y = None if labels is None else labels[start : start + batch_size].to(device)
            if model.family == "flow" and iw_samples > 1:
                log_p = model.log_prob_iw(x, iw_samples, y, generator=generator)
            else:
                log_p = model.log_prob(x, y, generator=generator)
            total += float(log_p.double().sum())
    finally:
        model.train(was_training)
    return -total / (len(images) * model.dim * math.log(2))


def nats_per_dim(model: DensityModel, points: torch.Tensor, batch_size: int = 4096) -> float:
    """Mean ``-log p(x) / D`` in nats over continuous ``points`` ``(N, D)``."""
    return bits_per_dim(model, points, batch_size) * math.log(2)


def score(model: DensityModel, data: torch.Tensor, **kwargs) -> tuple[float, str]:
    """``(value, unit)``: bits/dim for discrete data, nats/dim for continuous data."""
    if model.levels == 0:
        return nats_per_dim(model, data), "nats/dim"
    return bits_per_dim(model, data, **kwargs), "bits/dim"
