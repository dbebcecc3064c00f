"""Masked autoregressive transforms (Papamakarios, Pavlakou & Murray, 2017, "Masked Autoregressive
Flow for Density Estimation"; Kingma et al., 2016, "Improved Variational Inference with Inverse
Autoregressive Flow"), with a MADE conditioner (Germain et al., 2015; :mod:`densitylab.nn.made`).

Data -> noise, dimension by dimension in an order ``pi`` (a permutation fixed at construction),
given an optional context ``c`` (``context_features > 0``):

    affine:  z_i = (x_i - mu_i(x_<i, c)) * exp(-alpha_i(x_<i, c)),   log|det dz/dx| = -sum_i alpha_i
    spline:  z_i = RQS(x_i; theta_i(x_<i, c))                 (``splines.py``, Durkan et al. 2019)

``x_<i`` are the dimensions before ``i`` in the order. All ``mu, alpha`` (or spline parameters)
come from ONE pass of the masked MLP, so ``forward`` (density evaluation, MAF's training
direction) is one pass. ``inverse`` is sequential: ``x_i`` needs ``x_<i``. Two ways to compute it
(``method``):

- ``naive``: the fixed-point iteration ``x <- g(z; params(x))``, ``g`` the elementwise inverse,
  exact after ``D`` full passes because the Jacobian of ``params`` w.r.t. ``x`` is strictly
  triangular in the order;
- ``cached`` (default): ``D`` steps of the masked MLP evaluated incrementally
  (:class:`~densitylab.nn.made_steps.MaskedMLPSteps`): step ``i`` computes the hidden units whose
  last input ``x_{i-1}`` just arrived, then ``params_i`` and ``x_i``; every unit is computed once,
  the arithmetic of one full pass. Equal to ``naive`` up to the order of floating-point sums.

``alpha = b tanh(alpha_raw / b)`` is soft-clamped to ``(-b, b)``; the network's last layer starts
at zero, so every transform starts as the identity.

An inverse autoregressive flow (IAF) is :class:`InverseTransform` around this same class: its
``forward`` (data -> noise) is the sequential direction and its ``inverse`` (sampling) one pass.

Gradients of the sequential direction use the implicit function theorem instead of storing the
passes for backpropagation: at the solution ``x* = F(x*, z, c, theta)`` with ``J = dF/dx``
strictly triangular (nilpotent), ``dx*/d(z, c, theta) = (I - J)^{-1} dF/d(z, c, theta)``; the
backward pass solves ``v = b + v J``, in the memory of one pass: ``naive``, by ``D - 1``
vector-Jacobian products (exact, since ``J^D = 0``); ``cached``, by back-substitution from the
last position through the cached activations
(:meth:`~densitylab.nn.made_steps.MaskedMLPSteps.reverse`), the arithmetic of one pass.
"""

from __future__ import annotations

from typing import Any

import torch

from densitylab.models.flows.splines import rational_quadratic_spline, spline_params_per_dim
from densitylab.models.flows.transforms import Transform
from densitylab.nn.made import DEGREES, MaskedMLP

__all__ = ["DEGREES", "METHODS", "TRANSFORMS", "InverseTransform", "MaskedAutoregressiveTransform",
           "set_method"]

TRANSFORMS = ("affine", "spline")
METHODS = ("cached", "naive")


class _Permute(torch.autograd.Function):
    """``x[:, order]`` with the gather ``g[:, inverse]`` as its backward (not a scatter-add)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.inverse = inverse
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return grad.index_select(1, ctx.inverse), None, None


class _ImplicitInverse(torch.autograd.Function):
    """``x* = solve(z, context)`` without a graph; backward by the implicit function theorem (see
    the module docstring). ``context`` may be None."""

    @staticmethod
    def forward(ctx: Any, transform: MaskedAutoregressiveTransform, z: torch.Tensor,
                context: torch.Tensor | None, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.steps = None
        if transform.method == "cached":
            x, logabsdet, ctx.steps = transform.solve_steps(z, list(tensors), context)
        else:
            x, logabsdet = transform.solve(z, list(tensors), context)
        ctx.transform, ctx.has_context = transform, context is not None
        ctx.save_for_backward(z, x, *([] if context is None else [context]), *tensors)
        return x, logabsdet

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_x: torch.Tensor, grad_logdet: torch.Tensor) -> tuple[Any, ...]:
        transform = ctx.transform
        z, x, *rest = ctx.saved_tensors
        context, tensors = (rest[0], rest[1:]) if ctx.has_context else (None, rest)
        net, step_of = transform.net, transform.inverse_step
        with torch.enable_grad():
            point = x.detach().requires_grad_()
            fixed = [t.detach() for t in tensors]
            still = None if context is None else context.detach()
            if ctx.steps is not None:  # back-substitution through the cached steps: one pass
                v = _back_substitute(transform, ctx.steps, z, point, fixed, still, grad_x, grad_logdet)
            else:
                step, logdet = step_of(z.detach(), net(point, fixed, still))
                b = grad_x + _vjp(logdet, point, grad_logdet)
                v = b
                for _ in range(transform.dim - 1):  # v = b (I + J + ... + J^{D-1}) = b (I - J)^{-1}
                    v = b + _vjp(step, point, v)
            needs = ctx.needs_input_grad[1:]
            live_z = z.detach().requires_grad_(needs[0])
            live_c = None if context is None else context.detach().requires_grad_(needs[1])
            live = [t.detach().requires_grad_(n) for t, n in zip(tensors, needs[2:], strict=True)]
            step, logdet = step_of(live_z, net(x.detach(), live, live_c))
            inputs = [live_z, live_c, *live]
            wanted = [t for t in inputs if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad((step, logdet), wanted, (v, grad_logdet), allow_unused=True))
        out = [next(grads) if t is not None and t.requires_grad else None for t in inputs]
        return (None, *out)


def _back_substitute(transform: MaskedAutoregressiveTransform, steps: Any, z: torch.Tensor,
                     point: torch.Tensor, tensors: list[torch.Tensor], context: torch.Tensor | None,
                     grad_x: torch.Tensor, grad_logdet: torch.Tensor) -> torch.Tensor:
    """``v = b (I - J)^{-1}`` by :meth:`~densitylab.nn.made_steps.MaskedMLPSteps.reverse`, with
    ``b = grad_x + grad_logdet dlogdet/dx``; the elementwise map's derivatives w.r.t. each
    position's parameters from one vector-Jacobian product (each output reads its own only)."""
    params = transform.net(point, tensors, context)
    leaf = params.detach().requires_grad_()
    step, logdet = transform.inverse_step(z.detach(), leaf)
    (d_step,) = torch.autograd.grad(step, leaf, torch.ones_like(step), retain_graph=True)
    (d_logdet,) = torch.autograd.grad(logdet, leaf, grad_logdet)
    b = grad_x + torch.autograd.grad(params, point, d_logdet)[0]
    return steps.reverse(b.t(), d_step.permute(1, 2, 0)).t()


def _vjp(output: torch.Tensor, point: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``grad^T d output / d point`` (zero where ``output`` does not depend on ``point``)."""
    (value,) = torch.autograd.grad(output, point, grad, retain_graph=True, allow_unused=True)
    return torch.zeros_like(point) if value is None else value


class MaskedAutoregressiveTransform(Transform):
    """MAF's transform on ``(B, D)``: ``forward`` one pass of the masked MLP, ``inverse`` ``D``
    sequential steps (see the module docstring).

    ``order``: the autoregressive order, a permutation of ``0..D-1`` (``order[k]`` is the ``k``-th
    dimension; default ``0..D-1``). ``transform``: ``"affine"`` or ``"spline"`` (``bins`` bins on
    ``[-tail_bound, tail_bound]``, identity outside). ``scale_bound``: the affine log-scale's
    soft clamp. ``degrees``: the MADE's hidden degrees, ``sequential`` or ``random`` (drawn with
    ``seed``). ``blocks``: row blocks per layer (speed only). ``context_features > 0``: ``forward``
    and ``inverse`` take a context ``cond`` of shape ``(B, context_features)``. ``method``: how
    ``inverse`` is computed, ``"cached"`` or ``"naive"`` (an attribute; :func:`set_method` sets it
    on every such transform of a model).
    """

    def __init__(
        self,
        dim: int,
        hidden_sizes: list[int],
        order: torch.Tensor | list[int] | None = None,
        transform: str = "affine",
        bins: int = 8,
        tail_bound: float = 5.0,
        scale_bound: float = 3.0,
        seed: int = 0,
        blocks: int = 8,
        degrees: str = "sequential",
        context_features: int = 0,
        method: str = "cached",
    ) -> None:
        super().__init__()
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
        if transform == "spline" and (bins < 1 or tail_bound <= 0):
            raise ValueError(f"a spline needs bins >= 1 and tail_bound > 0, got {bins}, {tail_bound}")
        if scale_bound <= 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound}")
        order = torch.arange(dim) if order is None else torch.as_tensor(order, dtype=torch.long)
        if not torch.equal(order.sort().values, torch.arange(dim)):
            raise ValueError(f"order must be a permutation of 0..{dim - 1}")
        self.dim, self.kind, self.bins = dim, transform, bins
        self.tail_bound, self.scale_bound = float(tail_bound), float(scale_bound)
        self.method = _check_method(method)
        self.register_buffer("order", order.clone(), persistent=False)
        self.register_buffer("inverse_order", order.argsort(), persistent=False)
        self.natural_order = bool(torch.equal(order, torch.arange(dim)))
        per_dim = 2 if transform == "affine" else spline_params_per_dim(bins)
        self.net = MaskedMLP(dim, hidden_sizes, per_dim, degrees, seed, blocks,
                             context_features=context_features)

    # ----- the elementwise maps, in the ordered layout -------------------------------------------
    def _affine(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, raw = params.unbind(-1)
        bound = self.scale_bound
        return shift, bound * torch.tanh(raw / bound)

    def _spline(self, values: torch.Tensor, params: torch.Tensor, inverse: bool):
        k = self.bins
        out, log_derivative = rational_quadratic_spline(
            values, params[..., :k], params[..., k : 2 * k], params[..., 2 * k :], inverse,
            self.tail_bound)
        return out, log_derivative.sum(1)

    def forward_step(self, x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` and ``log|dz/dx|`` given the conditioner's ``params (B, D, P)``."""
        if self.kind == "spline":
            return self._spline(x, params, inverse=False)
        shift, log_scale = self._affine(params)
        return (x - shift) * torch.exp(-log_scale), -log_scale.sum(1)

    def inverse_step(self, z: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` and ``log|dx/dz|`` given ``params`` (exact where ``params`` are)."""
        if self.kind == "spline":
            return self._spline(z, params, inverse=True)
        shift, log_scale = self._affine(params)
        return z * torch.exp(log_scale) + shift, log_scale.sum(1)

    def solve(self, z: torch.Tensor, tensors: list[torch.Tensor],
              context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` and ``log|dx/dz|`` of ordered ``z`` by :attr:`method`, with the network's
        :meth:`~densitylab.nn.made.MaskedMLP.tensors` ``tensors``; no graph."""
        if self.method == "cached":
            return self._solve_cached(z, tensors, context)
        x, logabsdet = z, z.new_zeros(z.shape[0])
        for _ in range(self.dim):  # after pass k the first k positions of x are exact
            x, logabsdet = self.inverse_step(z, self.net(x, tensors, context))
        return x, logabsdet

    def _solve_cached(self, z: torch.Tensor, tensors: list[torch.Tensor],
                      context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.solve_steps(z, tensors, context)[:2]

    @torch.no_grad()
    def solve_steps(self, z: torch.Tensor, tensors: list[torch.Tensor],
                    context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """The cached solve: ``x``, ``log|dx/dz|`` and the
        :class:`~densitylab.nn.made_steps.MaskedMLPSteps` holding the network's activations at
        ``x`` (for the backward pass)."""
        steps = self.net.steps(z.shape[0], tensors, context)
        logdets = z.new_empty(self.dim, z.shape[0])
        if self.kind == "spline":
            for t in range(self.dim):
                x_t, logdets[t] = self.inverse_step(z[:, t : t + 1], steps.step(t).t()[:, None])
                steps.inputs[t] = x_t[:, 0]
        else:  # inverse_step's affine map on the (P, B) outputs of one position, in place
            columns, bound = z.t().contiguous(), self.scale_bound
            for t in range(self.dim):
                shift, raw = steps.step(t)
                log_scale = torch.tanh(raw.div_(bound), out=logdets[t]).mul_(bound)
                torch.addcmul(shift, columns[t], log_scale.exp(), out=steps.inputs[t])
        return steps.inputs.t().contiguous(), logdets.sum(0), steps

    # ----- the Transform protocol ----------------------------------------------------------------
    def _ordered(self, v: torch.Tensor) -> torch.Tensor:
        return v if self.natural_order else _Permute.apply(v, self.order, self.inverse_order)

    def _unordered(self, v: torch.Tensor) -> torch.Tensor:
        return v if self.natural_order else _Permute.apply(v, self.inverse_order, self.order)

    def forward(self, x, cond=None):
        context = self.net.check_context(cond, x.shape[0])
        ordered = self._ordered(x)
        z, logabsdet = self.forward_step(ordered, self.net(ordered, None, context))
        return self._unordered(z), logabsdet

    def inverse(self, z, cond=None):
        context = self.net.check_context(cond, z.shape[0])
        ordered = self._ordered(z)
        tensors = self.net.tensors()
        live = [ordered, *tensors] + ([] if context is None else [context])
        if torch.is_grad_enabled() and any(t.requires_grad for t in live):
            x, logabsdet = _ImplicitInverse.apply(self, ordered, context, *tensors)
        else:
            x, logabsdet = self.solve(ordered, tensors, context)
        return self._unordered(x), logabsdet


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return method


def set_method(module: torch.nn.Module, method: str) -> int:
    """Set ``method`` (``"cached"`` or ``"naive"``) on every :class:`MaskedAutoregressiveTransform`
    inside ``module`` (MAF sampling, IAF density); returns how many there are."""
    _check_method(method)
    found = [m for m in module.modules() if isinstance(m, MaskedAutoregressiveTransform)]
    for transform in found:
        transform.method = method
    return len(found)


class InverseTransform(Transform):
    """``inner`` run backwards: ``forward = inner.inverse``, ``inverse = inner.forward``."""

    def __init__(self, inner: Transform) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x, cond=None):
        return self.inner.inverse(x, cond)

    def inverse(self, z, cond=None):
        return self.inner(z, cond)
