"""FFJORD (Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud, 2019, "FFJORD: Free-form
Continuous Dynamics for Scalable Reversible Generative Models"): a density model whose flow is a
stack of continuous normalizing flows (``cnf.py``; Chen et al. 2018).

    h = preprocess(y),   z = CNF_n o ... o CNF_1 (h),   z ~ N(0, I)
    log p_Y(y) = log N(z; 0, I) + sum_k int_0^T tr(df_k/dz) dt + log|det dh/dy|

- Continuous vectors (the 1D / 2D toys): no preprocessing; ``f`` is a concat-squash MLP and the
  score is the density in nats. With ``trace="auto"`` and ``D <= exact_max_dim`` the trace is
  exact in training and evaluation, so reported numbers are exact up to the solver tolerance.
- Discrete data (images, gaps-1d): uniform dequantization ``y = (x + u)/K`` (``flow.py``),
  RealNVP's logit map ``logit(alpha + (1 - 2 alpha) y)``, and for images ``squeeze`` (default 2)
  squeezes ``(C, H, W) -> (4C, H/2, W/2)`` (volume preserving, log-det 0) so the ODE's conv net
  runs on ``16 x 7 x 7`` for 28x28 inputs: a single-scale model on a space-to-depth input
  (FFJORD's multiscale architecture is not implemented). Training uses the Hutchinson trace;
  evaluation too for ``D > eval_exact_max_dim`` (default 16): the exact trace costs ``D``
  backward passes per function evaluation, so image bits/dim are reported with the Hutchinson
  estimate, an unbiased estimate of the bound (its noise averages out over a test set).

Sampling integrates the CNFs backwards from Gaussian noise (without the trace). The number of
function evaluations of the last training step is logged through ``Flow.step_metrics``
(``nfe_forward``; ``nfe_backward`` for the adjoint's backward solve); :func:`nfe` reads them. The
model is a :class:`Flow` built by :func:`ffjord`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from densitylab.models.base import register_model
from densitylab.models.flows.cnf import CNF, ConcatConvNet, ConcatSquashMLP
from densitylab.models.flows.flow import Flow
from densitylab.models.flows.transforms import (
    DEFAULT_LOGIT_ALPHA,
    CompositeTransform,
    LogitTransform,
    Squeeze,
    Transform,
)


@dataclass
class FFJORDConfig:
    """Vectors: a concat-squash MLP of ``n_layers`` hidden layers of ``hidden`` units (FFJORD's
    toy net, 64-64-64). Images: ``squeeze`` 2x2 squeezes (while H and W are even; 28x28 ->
    16x7x7, 8x8 -> 16x2x2), then a conv net of ``conv_layers`` hidden 3x3 layers of
    ``hidden_channels`` (cheap enough for CPU; FFJORD's MNIST model is far larger).

    ``trace``: ``auto`` | ``exact`` | ``hutchinson`` (policy in ``cnf.py``: ``auto`` is exact for
    ``D <= exact_max_dim``, and in eval mode for ``D <= eval_exact_max_dim``); ``noise``:
    ``rademacher`` | ``gaussian``. ``solver``: a torchdiffeq method, ``dopri5`` by default
    (fixed-step ones need ``step_size``). ``adjoint``: O(1)-memory adjoint gradients (on CPU
    slower than backpropagating through the solver, the default). ``end_time``: ``T``, learnable
    with ``learn_end_time``. ``alpha``: the logit map's margin for discrete data.
    ``kinetic_weight`` / ``jacobian_weight``: RNODE's regularizers (see :class:`CNF`), off by
    default; with them a fixed-step solver stays accurate over long training."""

    hidden: int = 64
    n_layers: int = 3
    hidden_channels: int = 32
    conv_layers: int = 2
    squeeze: int = 2
    n_blocks: int = 1
    activation: str = "softplus"
    solver: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    step_size: float | None = None
    adjoint: bool = False
    trace: str = "auto"
    noise: str = "rademacher"
    exact_max_dim: int = 4
    eval_exact_max_dim: int = 16
    end_time: float = 1.0
    learn_end_time: bool = False
    kinetic_weight: float = 0.0  # RNODE: training adds this weight x int ||f||^2 dt (per dim)
    jacobian_weight: float = 0.0  # RNODE: training adds this weight x int ||df/dz||_F^2 dt (per dim)
    alpha: float = DEFAULT_LOGIT_ALPHA
    dequantization: str = "uniform"  # or "variational" (Flow++), for discrete data


def cnf_block(config: FFJORDConfig, latent_shape: tuple[int, ...]) -> CNF:
    """One CNF with FFJORD's dynamics: a concat-squash MLP on vectors, a concat conv net on images."""
    if len(latent_shape) == 3:
        net: nn.Module = ConcatConvNet(latent_shape[0], config.hidden_channels, config.conv_layers,
                                       config.activation)
    else:
        net = ConcatSquashMLP(latent_shape[0], config.hidden, config.n_layers, config.activation)
    return CNF(net, end_time=config.end_time, learn_end_time=config.learn_end_time,
               solver=config.solver, rtol=config.rtol, atol=config.atol,
               step_size=config.step_size, adjoint=config.adjoint, trace=config.trace,
               noise=config.noise, exact_max_dim=config.exact_max_dim,
               eval_exact_max_dim=config.eval_exact_max_dim,
               kinetic_weight=config.kinetic_weight, jacobian_weight=config.jacobian_weight)


@register_model("ffjord", "FFJORD: continuous normalizing flow (ODE, dopri5), Hutchinson or exact "
                "trace, optional adjoint; vectors and images (logit, squeeze, conv dynamics)",
                config=FFJORDConfig, default_lr=1e-3,
                data_kinds=frozenset({"image", "vector", "continuous"}))
def ffjord(config: FFJORDConfig, shape: tuple[int, ...], levels: int) -> Flow:
    """FFJORD: ``Flow([logit -> squeezes ->] CNF_n o ... o CNF_1 -> N(0, I))``."""
    if min(config.hidden, config.hidden_channels, config.n_blocks) < 1 or min(
            config.n_layers, config.conv_layers, config.squeeze) < 0:
        raise ValueError("hidden, hidden_channels and n_blocks must be >= 1; n_layers, "
                         "conv_layers and squeeze >= 0")
    image = len(shape) == 3
    steps: list[Transform] = [LogitTransform(config.alpha)] if levels > 0 else []
    latent_shape: tuple[int, ...] = (math.prod(shape),)
    if image:
        c, h, w = shape
        for _ in range(config.squeeze):
            if h % 2 or w % 2:
                break
            steps.append(Squeeze())
            c, h, w = 4 * c, h // 2, w // 2
        latent_shape = (c, h, w)
    blocks = CompositeTransform([cnf_block(config, latent_shape) for _ in range(config.n_blocks)])
    return Flow(shape, levels, blocks, prior="gaussian",
                preprocess=CompositeTransform(steps) if steps else None,
                dequantization=config.dequantization, flatten=not image, latent_shape=latent_shape)


def cnf_blocks(model: Flow) -> list[CNF]:
    """The CNF blocks of an FFJORD model, in the data -> noise order."""
    return [m for m in model.transform.modules() if isinstance(m, CNF)]


def nfe(model: Flow) -> dict[str, int | None]:
    """Function evaluations of the last solves of an FFJORD model, summed over its CNF blocks."""
    blocks = cnf_blocks(model)
    backward = [c.last_nfe_backward for c in blocks]
    return {
        "forward": sum(c.last_nfe_forward for c in blocks),
        "inverse": sum(c.last_nfe_inverse for c in blocks),
        "backward": None if None in backward else sum(b for b in backward if b is not None),
    }
