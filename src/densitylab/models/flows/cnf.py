"""Continuous normalizing flows (Chen et al. 2018, "Neural Ordinary Differential Equations";
Grathwohl et al. 2019, "FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative
Models").

A CNF is the time-``T`` map of an ODE ``dz/dt = f(z, t)``. By the instantaneous change of variables
(Chen et al. 2018, theorem 1), the log-density of ``z(t)`` changes along a trajectory as
``d log p(z(t))/dt = -tr(df/dz)``, so the Jacobian of the flow map ``x = z(0) -> z = z(T)`` has

    log|det dz/dx| = int_0^T tr(df/dz(z(t), t)) dt,    log p(x) = log p_base(z(T)) + log|det dz/dx|.

``forward`` (data -> noise) integrates the augmented state ``(z, delta)`` with
``dz/dt = f``, ``d delta/dt = tr(df/dz)`` from ``t = 0`` to ``T`` and returns ``(z(T), delta(T))``;
``inverse`` integrates the same system from ``T`` back to ``0`` (its ``delta`` is ``-int tr``).
Time is rescaled to ``s = t / T in [0, 1]`` (``dz/ds = T f(z, sT)``) so a learnable ``T``
(``T = sqrt_T^2``, as in FFJORD) is an ordinary parameter of the dynamics, for the adjoint too.

The trace. ``exact``: ``tr(df/dz) = sum_i d f_i / d z_i``, one vector-Jacobian product per
dimension (``D`` backward passes per function evaluation; fine for low ``D``). ``hutchinson``
(FFJORD): ``tr(A) = E_e[e^T A e]`` for noise with ``E[e e^T] = I`` (Rademacher or Gaussian), one
vector-Jacobian product per evaluation. The noise ``e`` is drawn once per solve (from the CNF's
``generator`` when set) and held fixed over time, so ``delta`` is an unbiased estimate of
``int tr`` and the dynamics stay a smooth ODE for the adaptive solver. ``auto`` (the default
policy): exact when ``D <= exact_max_dim`` (e.g. the 2D toys), else Hutchinson in training and,
in eval mode, exact when ``D <= eval_exact_max_dim`` (so reported numbers use the exact trace
when that is affordable) and Hutchinson (an unbiased estimate of ``log p``) above it.

Solving uses ``torchdiffeq.odeint`` (backpropagation through the solver's operations) or
``odeint_adjoint`` (the adjoint method: O(1) memory, a second solve backwards in time), with
``dopri5`` and tolerances ``rtol`` / ``atol`` by default. The number of function evaluations
(NFE) of the last forward, inverse and adjoint-backward solves are kept in ``last_nfe_forward``,
``last_nfe_inverse`` and ``last_nfe_backward``.

ODE networks: :class:`ConcatSquashMLP` for vectors (FFJORD's concat-squash layers:
``h' = (W h + b) * sigmoid(W_g t + b_g) + W_b t``) and :class:`ConcatConvNet` for images
(3x3 convolutions, each given the time as one extra constant input channel; single scale).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from itertools import pairwise

import torch
from torch import nn

from densitylab.models.flows.transforms import Transform

TRACES = ("auto", "exact", "hutchinson")
NOISES = ("rademacher", "gaussian")
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"softplus": nn.Softplus, "tanh": nn.Tanh}
FIXED_STEP_SOLVERS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams",
                      "implicit_adams", "fixed_adams")
ADAPTIVE_SOLVERS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def activation_slope(act: nn.Module, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    """The derivative of an activation of :data:`ACTIVATIONS` at ``pre`` (``post = act(pre)``)."""
    if isinstance(act, nn.Tanh):
        return 1 - post.square()
    if isinstance(act, nn.Softplus):
        scaled = pre * act.beta  # nn.Softplus is the identity above its threshold
        return torch.where(scaled > act.threshold, torch.ones_like(pre), torch.sigmoid(scaled))
    raise TypeError(f"no derivative known for {type(act).__name__}")


# ----- ODE networks f(t, z) ------------------------------------------------------------------


class ConcatSquashLinear(nn.Module):
    """``(W h + b) * sigmoid(W_g t + b_g) + W_b t`` (FFJORD's time-conditioned linear layer)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.layer = nn.Linear(in_features, out_features)
        self.gate = nn.Linear(1, out_features)
        self.time_bias = nn.Linear(1, out_features, bias=False)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        tt = t.reshape(1, 1).to(h)
        return self.layer(h) * torch.sigmoid(self.gate(tt)) + self.time_bias(tt)

    def forward_with_tangents(
        self, t: torch.Tensor, h: torch.Tensor, tangents: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's output and its directional derivatives: ``tangents`` ``(B, D, in)`` holds
        ``dh/dz_d`` for each input direction ``d``; the layer is affine in ``h`` for a fixed ``t``,
        so they map to ``(W dh/dz_d) * sigmoid(W_g t + b_g)``."""
        tt = t.reshape(1, 1).to(h)
        gate = torch.sigmoid(self.gate(tt))
        out = self.layer(h) * gate + self.time_bias(tt)
        return out, nn.functional.linear(tangents, self.layer.weight) * gate


class ConcatSquashMLP(nn.Module):
    """``f(t, z)`` for vectors ``(B, D)``: ``n_layers`` hidden concat-squash layers of ``hidden``
    units with a smooth activation, and a concat-squash output layer."""

    def __init__(self, dim: int, hidden: int, n_layers: int, act: str = "softplus") -> None:
        super().__init__()
        widths = [dim, *[hidden] * n_layers, dim]
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b) for a, b in pairwise(widths))
        self.act = activation(act)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = z
        for k, layer in enumerate(self.layers):
            h = layer(t, h)
            if k < len(self.layers) - 1:
                h = self.act(h)
        return h

    def forward_with_jacobian(self, t: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``f(t, z)`` and its Jacobian ``(B, D, D)`` (entry ``[b, d, i] = df_i/dz_d``) by
        forward-mode differentiation: the ``D`` columns ride along the layers as a
        ``(B, D, width)`` tangent, about ``D + 1`` forward passes in all and no double backward
        (for small ``D`` cheaper than ``D`` vector-Jacobian products built with ``create_graph``)."""
        dim = z.shape[1]
        h = z
        tangents = torch.eye(dim, dtype=z.dtype, device=z.device).expand(z.shape[0], dim, dim)
        for k, layer in enumerate(self.layers):
            pre, tangents = layer.forward_with_tangents(t, h, tangents)
            if k < len(self.layers) - 1:
                h = self.act(pre)
                tangents = tangents * activation_slope(self.act, pre, h).unsqueeze(1)
            else:
                h = pre
        return h, tangents


class ConcatConv2d(nn.Module):
    """A 3x3 convolution of ``[h, t]``: the time enters as one constant extra channel."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, 3, padding=1)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        tt = t.to(h).expand(h.shape[0], 1, *h.shape[2:])
        return self.conv(torch.cat([h, tt], 1))


class ConcatConvNet(nn.Module):
    """``f(t, z)`` for images ``(B, C, H, W)``: ``n_layers`` hidden time-concatenated 3x3
    convolutions of ``hidden`` channels with a smooth activation, and an output convolution back
    to ``C`` channels. Single scale (FFJORD's multiscale architecture is not implemented)."""

    def __init__(self, channels: int, hidden: int, n_layers: int, act: str = "softplus") -> None:
        super().__init__()
        widths = [channels, *[hidden] * n_layers, channels]
        self.layers = nn.ModuleList(ConcatConv2d(a, b) for a, b in pairwise(widths))
        self.act = activation(act)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = z
        for k, layer in enumerate(self.layers):
            h = layer(t, h)
            if k < len(self.layers) - 1:
                h = self.act(h)
        return h


# ----- traces ----------------------------------------------------------------------------------


def exact_trace(f: torch.Tensor, z: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """``tr(df/dz)`` per example: the sum of the ``D`` autograd diagonal entries ``d f_i/d z_i``
    (one backward pass per dimension). ``f`` must have been computed from ``z`` with grad on."""
    return exact_trace_and_frobenius(f, z, create_graph)[0]


def exact_trace_and_frobenius(
    f: torch.Tensor, z: torch.Tensor, create_graph: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``tr(df/dz)`` and ``||df/dz||_F^2`` per example, from the ``D`` rows of the Jacobian
    (one vector-Jacobian product each)."""
    f_flat = f.flatten(1)
    dim = f_flat.shape[1]
    trace = f.new_zeros(f.shape[0])
    frobenius = f.new_zeros(f.shape[0])
    for i in range(dim):
        (grad,) = torch.autograd.grad(f_flat[:, i].sum(), z, create_graph=create_graph,
                                      retain_graph=True)
        row = grad.flatten(1)
        trace = trace + row[:, i]
        frobenius = frobenius + row.square().sum(1)
    return trace, frobenius


def hutchinson_trace(
    f: torch.Tensor, z: torch.Tensor, noise: torch.Tensor, create_graph: bool
) -> torch.Tensor:
    """``e^T (df/dz) e`` per example (one vector-Jacobian product): an unbiased estimate of
    ``tr(df/dz)`` when ``E[e e^T] = I``."""
    return hutchinson_trace_and_frobenius(f, z, noise, create_graph)[0]


def hutchinson_trace_and_frobenius(
    f: torch.Tensor, z: torch.Tensor, noise: torch.Tensor, create_graph: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unbiased estimates of ``tr(df/dz)`` (``e^T J e``) and ``||df/dz||_F^2`` (``||e^T J||^2``)
    from one vector-Jacobian product, for noise with ``E[e e^T] = I``."""
    (e_jac,) = torch.autograd.grad(f, z, noise, create_graph=create_graph, retain_graph=True)
    return (e_jac * noise).flatten(1).sum(1), e_jac.square().flatten(1).sum(1)


def draw_noise(
    kind: str,
    like: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Hutchinson noise shaped like ``like``: Rademacher (+-1) or standard Gaussian, drawn on the
    generator's device (CPU without one) and moved to ``like``'s."""
    device = generator.device if generator is not None else torch.device("cpu")
    if kind == "rademacher":
        e = torch.randint(0, 2, like.shape, generator=generator, device=device).mul_(2).sub_(1)
    elif kind == "gaussian":
        e = torch.randn(like.shape, generator=generator, device=device)
    else:
        raise ValueError(f"noise must be one of {', '.join(NOISES)}, got {kind!r}")
    return e.to(device=like.device, dtype=like.dtype)


# ----- the solve -------------------------------------------------------------------------------


class _Dynamics:
    """The right-hand side handed to torchdiffeq for one solve, in rescaled time ``s in [0, 1]``:
    ``(dz/ds, d delta/ds) = T (f(z, sT), tr(df/dz))``, and with ``regularize`` two more rates,
    ``T ||f||^2`` and ``T ||df/dz||_F^2`` (their integrals are RNODE's kinetic energy and Jacobian
    norm). It holds that solve's Hutchinson noise (so the adjoint's backward solve sees the same
    noise) and counts its evaluations.

    Gradients: the trace is built with ``create_graph`` exactly when grad mode is on at the call
    (training without adjoint, and the adjoint's backward solve); without grad mode (evaluation,
    the adjoint's forward solve) the outputs are detached."""

    def __init__(self, cnf: CNF, exact: bool | None, noise: torch.Tensor | None,
                 regularize: bool = False) -> None:
        self.cnf, self.exact, self.noise, self.regularize = cnf, exact, noise, regularize
        self.calls = 0

    def __call__(self, s: torch.Tensor, state):
        self.calls += 1
        with_logdet = self.exact is not None
        z = state[0] if with_logdet else state
        if not with_logdet:  # sampling: f only, no autograd needed
            return self.cnf.velocity(s, z)
        end_time = self.cnf.end_time()
        f, trace, frobenius = self._terms(s * end_time, z)
        rates = (f * end_time, trace * end_time)
        if self.regularize:
            rates += (f.flatten(1).square().sum(1) * end_time, frobenius * end_time)
        return rates

    def _terms(self, t: torch.Tensor, z: torch.Tensor):
        """``f``, its trace and its squared Frobenius norm (``None`` unless regularizing)."""
        net, keep_graph = self.cnf.net, torch.is_grad_enabled()
        if self.exact and hasattr(net, "forward_with_jacobian"):
            # forward mode: the Jacobian comes with f, differentiable exactly when grad mode is on
            f, jacobian = net.forward_with_jacobian(t, z)
            frobenius = jacobian.square().sum((1, 2)) if self.regularize else None
            return f, jacobian.diagonal(dim1=1, dim2=2).sum(1), frobenius
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = net(t, z)
            if self.exact:
                trace, frobenius = exact_trace_and_frobenius(f, z, create_graph=keep_graph)
            else:
                trace, frobenius = hutchinson_trace_and_frobenius(f, z, self.noise,
                                                                   create_graph=keep_graph)
        if not keep_graph:
            f, trace, frobenius = f.detach(), trace.detach(), frobenius.detach()
        return f, trace, frobenius


class CNF(Transform):
    """A continuous normalizing flow ``x -> z(T)`` with dynamics ``net(t, z)`` (see the module
    docstring for the maths and the trace policy).

    ``generator``: set it (e.g. for the duration of a ``log_prob`` call) to draw the Hutchinson
    noise from a seeded generator; without it the noise comes from torch's global generator.
    ``Flow.log_prob`` does so for every transform that declares ``uses_noise``.

    ``kinetic_weight`` / ``jacobian_weight`` (RNODE, Finlay et al. 2020, "How to train your
    neural ODE"): in training, each data -> noise solve also integrates ``int_0^T ||f||^2 dt`` and
    ``int_0^T ||df/dz||_F^2 dt`` (exact with the exact trace, Hutchinson's ``||e^T J||^2``
    otherwise), and :meth:`training_penalty` hands their weighted sum per example to the training
    loss. Dynamics kept straight and smooth this way are solved accurately by a few fixed steps
    (and in fewer adaptive ones); the density itself, and every evaluation, is unchanged.
    """

    uses_noise = True

    def __init__(
        self,
        net: nn.Module,
        *,
        end_time: float = 1.0,
        learn_end_time: bool = False,
        solver: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        step_size: float | None = None,
        adjoint: bool = False,
        trace: str = "auto",
        noise: str = "rademacher",
        exact_max_dim: int = 4,
        eval_exact_max_dim: int = 16,
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if trace not in TRACES:
            raise ValueError(f"trace must be one of {', '.join(TRACES)}, got {trace!r}")
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {', '.join(NOISES)}, got {noise!r}")
        if solver not in ADAPTIVE_SOLVERS + FIXED_STEP_SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(ADAPTIVE_SOLVERS + FIXED_STEP_SOLVERS)}, "
                             f"got {solver!r}")
        if solver in FIXED_STEP_SOLVERS and not (step_size and step_size > 0):
            raise ValueError(f"the fixed-step solver {solver!r} needs a positive step_size")
        if not end_time > 0 or not rtol > 0 or not atol > 0:
            raise ValueError("end_time, rtol and atol must be positive")
        if kinetic_weight < 0 or jacobian_weight < 0:
            raise ValueError("kinetic_weight and jacobian_weight must be >= 0")
        self.kinetic_weight, self.jacobian_weight = float(kinetic_weight), float(jacobian_weight)
        self._penalty: torch.Tensor | None = None
        self._penalty_terms: dict[str, float] = {}
        self.net = net
        self.solver, self.rtol, self.atol, self.step_size = solver, rtol, atol, step_size
        self.adjoint, self.trace, self.noise = adjoint, trace, noise
        self.exact_max_dim, self.eval_exact_max_dim = exact_max_dim, eval_exact_max_dim
        self.fixed_end_time = float(end_time)
        self.sqrt_end_time: nn.Parameter | None
        if learn_end_time:
            self.sqrt_end_time = nn.Parameter(torch.tensor(math.sqrt(end_time)))
        else:
            self.register_parameter("sqrt_end_time", None)
        self.generator: torch.Generator | None = None
        self.last_nfe_forward = 0
        self.last_nfe_inverse = 0
        self._last_forward_solve: tuple[_Dynamics, int] | None = None

    def end_time(self) -> torch.Tensor | float:
        """``T``: ``sqrt_T^2`` when learnable, else the fixed value."""
        if self.sqrt_end_time is None:
            return self.fixed_end_time
        return self.sqrt_end_time.square()

    def velocity(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``dz/ds = T f(z, sT)`` in rescaled time."""
        end_time = self.end_time()
        return self.net(s * end_time, z) * end_time

    def use_exact_trace(self, dim: int) -> bool:
        """The trace policy: see the module docstring."""
        if self.trace != "auto":
            return self.trace == "exact"
        return dim <= self.exact_max_dim or (not self.training and dim <= self.eval_exact_max_dim)

    @property
    def last_nfe_backward(self) -> int | None:
        """Function evaluations of the adjoint's backward solve after the last forward solve
        (``None`` without the adjoint: backpropagation through the solver evaluates nothing)."""
        if not self.adjoint or self._last_forward_solve is None:
            return None
        solve, forward_calls = self._last_forward_solve
        return solve.calls - forward_calls

    def _solve(self, dynamics: _Dynamics, state, reverse: bool):
        like = state[0] if isinstance(state, tuple) else state
        grid = torch.tensor([1.0, 0.0] if reverse else [0.0, 1.0], dtype=like.dtype, device=like.device)
        options = {"step_size": self.step_size} if self.solver in FIXED_STEP_SOLVERS else None
        kwargs = dict(rtol=self.rtol, atol=self.atol, method=self.solver, options=options)
        # imported here: torchdiffeq pulls in scipy.integrate, about 0.6 s that every command
        # building the model registry would otherwise pay
        from torchdiffeq import odeint, odeint_adjoint

        if self.adjoint:
            params = tuple(p for p in self.parameters() if p.requires_grad)
            out = odeint_adjoint(dynamics, state, grid, adjoint_params=params, **kwargs)
        else:
            out = odeint(dynamics, state, grid, **kwargs)
        if isinstance(out, tuple):
            return tuple(o[-1] for o in out)
        return out[-1]

    @property
    def regularized(self) -> bool:
        """Whether training adds RNODE's kinetic-energy or Jacobian-norm penalty."""
        return self.kinetic_weight > 0 or self.jacobian_weight > 0

    def _integrate(self, x: torch.Tensor, reverse: bool, with_logdet: bool = True):
        exact = self.use_exact_trace(x[0].numel()) if with_logdet else None
        noise = None if exact or not with_logdet else draw_noise(self.noise, x, self.generator)
        regularize = (with_logdet and not reverse and self.regularized and self.training
                      and torch.is_grad_enabled())
        dynamics = _Dynamics(self, exact, noise, regularize)
        state = (x, x.new_zeros(x.shape[0])) if with_logdet else x
        if regularize:
            state += (x.new_zeros(x.shape[0]), x.new_zeros(x.shape[0]))
        try:
            out = self._solve(dynamics, state, reverse)
        except AssertionError as exc:  # torchdiffeq's "underflow in dt": diverged dynamics
            if "underflow" not in str(exc):
                raise
            warnings.warn(f"CNF solve failed ({exc}); returning NaN so the step is skipped",
                          RuntimeWarning, stacklevel=2)
            nan = torch.full_like(x, math.nan)
            out = (nan, nan.new_full((x.shape[0],), math.nan)) if with_logdet else nan
        if reverse:
            self.last_nfe_inverse = dynamics.calls
        else:
            self.last_nfe_forward = dynamics.calls
            self._last_forward_solve = (dynamics, dynamics.calls)
        if regularize:
            out, (kinetic, frobenius) = out[:2], out[2:]
            self._penalty = self.kinetic_weight * kinetic + self.jacobian_weight * frobenius
            self._penalty_terms = {"kinetic_energy": float(kinetic.detach().mean()),
                                   "jacobian_frobenius": float(frobenius.detach().mean())}
        return out

    def training_penalty(self) -> torch.Tensor | None:
        """RNODE's penalty of the last training solve, per example (``kinetic_weight * int ||f||^2
        + jacobian_weight * int ||df/dz||_F^2``), handed over once: ``None`` afterwards, and
        without the regularizer, in evaluation, or when no training solve ran since."""
        penalty, self._penalty = self._penalty, None
        return penalty

    def forward(self, x, cond=None):
        """Data -> noise: ``(z(T), int_0^T tr(df/dz) dt)``."""
        return self._integrate(x, reverse=False)

    def inverse(self, z, cond=None):
        """Noise -> data: ``(z(0), -int_0^T tr dt)``."""
        return self._integrate(z, reverse=True)

    def invert(self, z, cond=None):
        """Noise -> data without the trace (sampling): one ODE solve for ``z`` alone."""
        return self._integrate(z, reverse=True, with_logdet=False)

    def step_metrics(self) -> dict[str, float]:
        """Function evaluations of the last forward solve (and of the adjoint's backward solve),
        the end time when it is learned, and with RNODE's penalty the batch means of its two
        integrals in the last training solve."""
        metrics = {"nfe_forward": float(self.last_nfe_forward)}
        if self.last_nfe_backward is not None:
            metrics["nfe_backward"] = float(self.last_nfe_backward)
        if self.sqrt_end_time is not None:
            metrics["end_time"] = float(self.end_time())
        return metrics | self._penalty_terms
