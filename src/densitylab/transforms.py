"""Public transforms: the parts every densitylab flow is composed of.

Each maps data to noise, ``t(x, cond=None) -> (z, log|det dz/dx|)``, with
``t.inverse(z, cond=None) -> (x, log|det dx/dz|)``; compose them with :class:`CompositeTransform`
and give them a prior in a :class:`~densitylab.Flow`. The maths of each, data -> noise:

- ``AffineCoupling``: RealNVP on images, ``z_b = x_b exp(s(x_a)) + t(x_a)`` (checkerboard, half or
  channel mask);
- ``AffineVectorCoupling``: RealNVP on vectors (even/odd halves); with a context ``c``, ``s, t``
  read ``(x_a, c)``;
- ``AdditiveCoupling``: NICE, ``z_b = x_b + m(x_a)``, volume preserving (``log|det| = 0``);
- ``GlowCoupling``: Glow, ``z_b = (x_b + t(x_a)) s``, ``s = 0.01 + 0.99 sigmoid(r(x_a) + 2)``;
- ``MaskedAutoregressiveTransform``: MAF, ``z_i = (x_i - mu_i(x_<i)) exp(-alpha_i(x_<i))`` or a
  rational-quadratic spline of ``x_i`` with parameters from ``x_<i``;
- ``InverseTransform``: ``t^-1`` as a transform (IAF = ``InverseTransform(MAF stack)``);
- ``ActNorm``: ``z = (x - b) exp(-log s)`` per channel, data-initialised by ``Flow.initialize``;
- ``InvConv1x1``: Glow's invertible 1x1 convolution, LU-decomposed, ``log|det| = H W sum log|s|``;
- ``AsChannels``: a per-channel image transform applied to ``(B, D)`` vectors;
- ``DiagonalScaling``: NICE's ``z = x exp(s)``;
- ``LogitTransform``: ``z = logit(alpha + (1 - 2 alpha) y)`` for ``y`` in ``[0, 1)``;
- ``Shift``: ``z = x + c`` (Glow's centring);
- ``Standardize``: ``z = (x - mean) / std``, fitted to a training set;
- ``Squeeze``: ``(C, H, W) -> (4C, H/2, W/2)``, volume preserving;
- ``MultiScale``: stages with factor-out (RealNVP, Glow), channels leave after each stage;
- ``MixtureCDF``: ``z = F(x)``, ``F`` a mixture of Gaussians/logistics (the 1D CDF flow);
- ``CNF``: FFJORD, ``dz/dt = f(z, t)``, ``log|det| = int tr(df/dz) dt`` (exact or Hutchinson);
- ``CompositeTransform``: ``t_n o ... o t_1``.

Priors: :class:`GaussianPrior`, :class:`LogisticPrior`, :class:`UniformPrior` (or their names).
"""

from densitylab.models.flows.autoregressive import InverseTransform, MaskedAutoregressiveTransform
from densitylab.models.flows.cnf import CNF, ConcatSquashMLP
from densitylab.models.flows.coupling import (
    AdditiveCoupling,
    AffineCoupling,
    AffineVectorCoupling,
    GlowCoupling,
)
from densitylab.models.flows.invconv import InvConv1x1
from densitylab.models.flows.mixture_cdf import MixtureCDF
from densitylab.models.flows.multiscale import MultiScale
from densitylab.models.flows.nice import DiagonalScaling
from densitylab.models.flows.priors import GaussianPrior, LogisticPrior, Prior, UniformPrior
from densitylab.models.flows.transforms import (
    ActNorm,
    AsChannels,
    CompositeTransform,
    LogitTransform,
    Shift,
    Squeeze,
    Standardize,
    Transform,
)

__all__ = [
    "CNF", "ActNorm", "AdditiveCoupling", "AffineCoupling", "AffineVectorCoupling", "AsChannels",
    "CompositeTransform", "ConcatSquashMLP", "DiagonalScaling", "GaussianPrior", "GlowCoupling",
    "InvConv1x1", "InverseTransform", "LogisticPrior", "LogitTransform",
    "MaskedAutoregressiveTransform", "MixtureCDF", "MultiScale", "Prior", "Shift", "Squeeze",
    "Standardize", "Transform", "UniformPrior",
]
