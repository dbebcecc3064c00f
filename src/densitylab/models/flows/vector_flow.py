"""What the coupling flows on ``(B, D)`` vectors share (``realnvp_vector``, ``glow_vector``).

Continuous vectors are modelled as they are (scored in nats/dim); discrete vectors are dequantized
to ``y in [0,1)^D`` and mapped by RealNVP's ``logit(alpha + (1 - 2 alpha) y)`` first (its
log-determinant included). A coupling splits the coordinates in two, so ``D >= 2``. ActNorm layers
are initialised from the data (``initialize_from_data``).
"""

from __future__ import annotations

from densitylab.models.flows.flow import Flow
from densitylab.models.flows.transforms import LogitTransform, initialize_actnorms


class VectorCouplingFlow(Flow):
    """A :class:`Flow` on vectors with the dequantization, logit preprocessing and dimension check
    above; subclasses set ``self.transform`` (and ``prior``)."""

    default_lr = 1e-3
    data_kinds = frozenset({"vector", "continuous"})
    flatten = True

    def __init__(self, shape: tuple[int, ...], levels: int, dequantization: str, alpha: float) -> None:
        super().__init__(shape, levels)
        self.set_dequantization(dequantization)
        if self.dim < 2:
            raise ValueError("a coupling flow splits the coordinates in two, and 1-dimensional "
                             "data has one (use cdf1d for 1D data)")
        if not self.continuous:
            self.preprocess = LogitTransform(alpha)

    def initialize_from_data(self, x):
        """ActNorm's data-dependent init: one training-mode forward pass on (up to 512 of) ``x``."""
        initialize_actnorms(self, x)
