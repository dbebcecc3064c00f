"""CDF flow on 1D data: the first flow of Berkeley's CS294-158 "Deep Unsupervised Learning"
(lecture 3, homework 2, "1D flow"): the transform is the CDF of a learned mixture, the prior uniform.

For ``x`` in R (continuous data) or ``y = (x + u) / K`` in ``[0, 1)`` (dequantized integer data,
``flow.py``), with ``F`` the CDF of a ``K``-component mixture of Gaussians or logistics
(``mixture_cdf.py``):

    z = F(y) ~ U[0, 1],    log p_Y(y) = log p_U(z) + log F'(y) = log f(y)

so the model's density is the mixture density itself, trained by maximum likelihood through the
change of variables. ``prior="gaussian"`` / ``"logistic"`` compose ``F`` with ``Phi^{-1}`` /
``logit`` (same density, a Gaussian / logistic latent). Sampling draws ``z`` from the prior and
inverts ``F`` by bisection.

Vectors with ``D > 1`` are accepted: each dimension gets its own independent mixture CDF, so the
density is the product of ``D`` 1D densities (for dependencies between dimensions use ``arflow``).

Initialisation: for continuous data a fit to N(0, 1) (means at its quantiles); for dequantized
data the means are spread over ``[0, 1)`` (bin centres), scales half a bin wide.
``Flow.initialize`` (called by the trainer before the first step) puts the means at the
``(k + 1/2)/K`` quantiles of the (dequantized) data and the scales at ``std / sqrt(K)``. The mixture's tails
reach outside ``[0, 1)``: that mass is lost for discrete data (the bound stays a bound).
"""

from __future__ import annotations

from dataclasses import dataclass

from densitylab.models.base import register_model
from densitylab.models.flows.flow import Flow
from densitylab.models.flows.mixture_cdf import MixtureCDF, check_kind, check_latent, spread_init


@dataclass
class CDF1DConfig:
    """``kind``: ``gaussian`` or ``logistic`` components; ``prior``: ``uniform`` (``z = F(x)``),
    ``gaussian`` (``z = Phi^{-1}(F(x))``) or ``logistic`` (``z = logit F(x)``)."""

    n_components: int = 5
    kind: str = "gaussian"
    prior: str = "uniform"


@register_model("cdf1d", "1D CDF flow: z = F(x), F the CDF of a mixture of Gaussians/logistics, "
                "uniform prior; independent per dimension for D > 1 (CS294-158 homework)",
                config=CDF1DConfig, default_lr=1e-2, data_kinds=frozenset({"vector", "continuous"}))
def cdf1d(config: CDF1DConfig, shape: tuple[int, ...], levels: int) -> Flow:
    """``Flow(MixtureCDF -> prior)``; its data-dependent init puts the means at the quantiles."""
    if len(shape) != 1:
        raise ValueError(f"cdf1d models vectors (D,), got shape {tuple(shape)}")
    if config.n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {config.n_components}")
    dim = shape[0]
    transform = MixtureCDF(dim, config.n_components, check_kind(config.kind), config.prior)
    if levels > 0:
        transform.set_mixture(*spread_init(dim, config.n_components, 0.0, 1.0))
    flow = Flow(shape, levels, transform, prior=check_latent(config.prior))
    flow.init_examples = INIT_EXAMPLES
    return flow


INIT_EXAMPLES = 4096  # quantiles are cheap: initialise from up to this many examples
