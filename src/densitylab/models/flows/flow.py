"""A flow model assembled from parts: ``preprocess -> transform -> prior``.

    log p_Y(y) = log p_prior(z) + log|det dz/dh| + log|det dh/dy|,   h = preprocess(y), z = transform(h)

``preprocess`` is RealNVP's logit map for dequantized data in ``[0, 1)`` (flows with a Gaussian or
logistic prior), or nothing (continuous data, CDF flows with a uniform prior). Vector flows
(MAF, IAF, CDF flows, FFJORD on toys) set ``flatten = True`` so the transform sees ``(B, D)``.
Sampling runs the transform's inverse on prior noise and maps it back through the preprocessing.
"""

from __future__ import annotations

import torch

from densitylab.models.flows.dequantized import DequantizedFlow
from densitylab.models.flows.priors import prior_log_prob, prior_sample
from densitylab.models.flows.transforms import Transform


class Flow(DequantizedFlow):
    """Subclasses set ``self.transform``, ``self.prior`` (a name in ``priors.PRIORS``) and
    optionally ``self.preprocess`` in ``__init__``."""

    flatten: bool = True
    transform: Transform
    prior: str = "gaussian"

    def __init__(self, shape: tuple[int, ...], levels: int) -> None:
        super().__init__(shape, levels)
        # An instance attribute, not a class default: nn.Module keeps a submodule assigned later
        # in ``_modules``, which a class attribute of the same name would shadow.
        self.preprocess: Transform | None = None

    def latent_shape(self) -> tuple[int, ...]:
        return (self.dim,) if self.flatten else self.shape

    def to_latent(self, y: torch.Tensor, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Data ``y`` -> latent ``z`` and ``log|det dz/dy|``."""
        h = y.flatten(1) if self.flatten else y
        logabsdet = h.new_zeros(h.shape[0])
        if self.preprocess is not None:
            h, logabsdet = self.preprocess(h)
        z, ld = self.transform(h, cond)
        return z, logabsdet + ld

    def from_latent(self, z: torch.Tensor, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent ``z`` -> data ``y`` (in the data's shape) and ``log|det dy/dz|``."""
        h, logabsdet = self.transform.inverse(z, cond)
        if self.preprocess is not None:
            h, ld = self.preprocess.inverse(h)
            logabsdet = logabsdet + ld
        return h.reshape(-1, *self.shape), logabsdet

    def log_density(self, y, cond=None):
        z, logabsdet = self.to_latent(y, cond)
        return prior_log_prob(self.prior, z) + logabsdet

    def sample_continuous(self, n, cond=None, temperature=1.0, generator=None):
        z = prior_sample(self.prior, (n, *self.latent_shape()), generator, temperature,
                         self.device, self.dtype)
        return self.from_latent(z, cond)[0]
