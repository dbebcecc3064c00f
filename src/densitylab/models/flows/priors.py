"""Base distributions of flows: ``log_prob(z)`` summed over all non-batch dimensions, and
``sample(shape, generator, temperature)``.

- ``gaussian``: N(0, I). Temperature scales the standard deviation.
- ``logistic``: independent standard logistics, ``log p(z) = log sigmoid(z) + log sigmoid(-z)``
  (NICE's prior). Temperature scales the logistic's scale.
- ``uniform``: U[0, 1)^D (the prior of CDF flows). ``log p = 0`` inside, ``-inf`` outside.
  Temperature is ignored (a uniform has no scale to shrink).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PRIORS = ("gaussian", "logistic", "uniform")


def check_prior(name: str) -> str:
    if name not in PRIORS:
        raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {name!r}")
    return name


def prior_log_prob(name: str, z: torch.Tensor) -> torch.Tensor:
    """``log p(z)`` per example (nats), summed over every dimension but the first."""
    if name == "gaussian":
        per_dim = -0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)
    elif name == "logistic":
        per_dim = F.logsigmoid(z) + F.logsigmoid(-z)
    else:
        inside = (z >= 0) & (z <= 1)
        per_dim = torch.where(inside, torch.zeros_like(z), torch.full_like(z, -math.inf))
    return per_dim.flatten(1).sum(1)


def prior_sample(
    name: str,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw ``shape`` from the prior (noise drawn on the generator's device, then moved)."""
    if name == "gaussian":
        z = torch.randn(shape, generator=generator) * temperature
    else:
        u = torch.rand(shape, generator=generator, dtype=torch.float64)
        if name == "uniform":
            z = u
        else:
            u = u.clamp(1e-12, 1 - 1e-12)
            z = (torch.log(u) - torch.log1p(-u)) * temperature
    return z.to(device=device, dtype=dtype)
