"""Base distributions of flows, as modules: ``log_prob(z)`` summed over all non-batch dimensions,
and ``sample(shape, generator, temperature, device, dtype)``.

- :class:`GaussianPrior` (``"gaussian"``): N(0, I). Temperature scales the standard deviation.
- :class:`LogisticPrior` (``"logistic"``): independent standard logistics,
  ``log p(z) = log sigmoid(z) + log sigmoid(-z)`` (NICE's prior). Temperature scales the scale.
- :class:`UniformPrior` (``"uniform"``): U[0, 1)^D (the prior of CDF flows); ``log p = 0``
  inside, ``-inf`` outside. Temperature is ignored (a uniform has no scale to shrink).

Samples are drawn on the generator's device (the CPU by default) and then moved, so the same seed
gives the same noise on every device. A learned prior (Glow's) is written as a transform before a
fixed prior instead (``glow.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PRIORS = ("gaussian", "logistic", "uniform")


class Prior(nn.Module):
    """A fixed base distribution; ``name`` is its registry name."""

    name: str = "prior"

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` per example (nats), summed over every dimension but the first."""
        return self.log_density(z).flatten(1).sum(1)

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """Elementwise ``log p(z_i)``."""
        raise NotImplementedError

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
               temperature: float = 1.0, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return self.name


class GaussianPrior(Prior):
    name = "gaussian"

    def log_density(self, z):
        return -0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)

    def sample(self, shape, generator=None, temperature=1.0, device=None, dtype=torch.float32):
        return (torch.randn(shape, generator=generator) * temperature).to(device=device, dtype=dtype)


class LogisticPrior(Prior):
    name = "logistic"

    def log_density(self, z):
        return F.logsigmoid(z) + F.logsigmoid(-z)

    def sample(self, shape, generator=None, temperature=1.0, device=None, dtype=torch.float32):
        u = torch.rand(shape, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        return ((torch.log(u) - torch.log1p(-u)) * temperature).to(device=device, dtype=dtype)


class UniformPrior(Prior):
    name = "uniform"

    def log_density(self, z):
        inside = (z >= 0) & (z <= 1)
        return torch.where(inside, torch.zeros_like(z), torch.full_like(z, -math.inf))

    def sample(self, shape, generator=None, temperature=1.0, device=None, dtype=torch.float32):
        return torch.rand(shape, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)


_PRIOR_CLASSES: dict[str, type[Prior]] = {
    "gaussian": GaussianPrior, "logistic": LogisticPrior, "uniform": UniformPrior}


def check_prior(name: str) -> str:
    if name not in PRIORS:
        raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {name!r}")
    return name


def make_prior(prior: str | Prior) -> Prior:
    """The prior named ``prior`` (a :class:`Prior` passes through)."""
    if isinstance(prior, Prior):
        return prior
    return _PRIOR_CLASSES[check_prior(prior)]()
