"""Transforms between stored images and the discrete data a model sees.

- ``requantize``: ``floor(x * K_out / K_in)``. From 8 bits this is ``x >> (8 - n_bits)``; to one
  bit it is the binarization rule used everywhere in densitylab: a pixel is 1 when it is at least
  half the native range (``x >= 128`` for 8-bit data), else 0.
- ``downsample``: the mean of each ``f x f`` block of pixels, rounded to the nearest level (the
  14x14 Fashion-MNIST of the benchmarks of slow models).
- ``uniform_dequantize``: ``v = x + u, u ~ U[0,1)^D``, returned divided by K, so in ``[0, 1)``.
"""

from __future__ import annotations

import torch


def requantize(x: torch.Tensor, from_levels: int, to_levels: int) -> torch.Tensor:
    """Map integers in ``{0..from_levels-1}`` to ``{0..to_levels-1}`` by ``floor(x*to/from)``."""
    if from_levels == to_levels:
        return x
    return (x.long() * to_levels // from_levels).to(x.dtype)


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``(N, C, H, W)`` integer images -> ``(N, C, H/f, W/f)``: each ``f x f`` block's mean, rounded
    half up, in the input's dtype (so the levels stay the same)."""
    n, c, h, w = x.shape
    if h % factor or w % factor:
        raise ValueError(f"cannot downsample {h}x{w} images by {factor}")
    blocks = x.long().reshape(n, c, h // factor, factor, w // factor, factor).sum((3, 5))
    area = factor * factor
    return ((2 * blocks + area) // (2 * area)).to(x.dtype)


def binarize(x: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """1 where ``x >= levels / 2`` (128 for 8-bit images), else 0."""
    return requantize(x, levels, 2)


def uniform_dequantize(
    x: torch.Tensor, n_levels: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``(x + u) / K`` with ``u ~ U[0,1)`` per dimension: continuous values in ``[0, 1)``.

    Computed in float64 and kept strictly below 1 (``(255 + u) / 256`` rounds to 1.0 in float32
    for ``u`` close to 1).
    """
    noise_device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, device=noise_device, dtype=torch.float64)
    y = (x.double() + u.to(x.device)) / n_levels
    return y.clamp_(max=_BELOW_ONE).float()


_BELOW_ONE = 1.0 - 2.0**-24  # the largest float32 below 1
