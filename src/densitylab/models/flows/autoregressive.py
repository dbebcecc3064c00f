"""Masked autoregressive transforms (Papamakarios, Pavlakou & Murray, 2017, "Masked Autoregressive
Flow for Density Estimation"; Kingma et al., 2016, "Improved Variational Inference with Inverse
Autoregressive Flow"), with a MADE conditioner (Germain et al., 2015).

Data -> noise, dimension by dimension in an order ``pi`` (a permutation fixed at construction):

    affine:  z_i = (x_i - mu_i(x_<i)) * exp(-alpha_i(x_<i)),   log|det dz/dx| = -sum_i alpha_i
    spline:  z_i = RQS(x_i; theta_i(x_<i))                      (``splines.py``, Durkan et al. 2019)

``x_<i`` are the dimensions before ``i`` in the order. All ``mu, alpha`` (or spline parameters)
come from ONE pass of a MADE network, so ``forward`` (density evaluation, MAF's training
direction) is one pass. ``inverse`` is sequential: ``x_i`` needs ``x_<i``, so it takes ``D``
passes; the fixed-point iteration ``x <- g(z; params(x))`` of ``g`` the elementwise inverse is exact
after ``D`` passes, because the Jacobian of ``params`` w.r.t. ``x`` is strictly triangular in the
order. ``alpha = b tanh(alpha_raw / b)`` is soft-clamped to ``(-b, b)``; the network's last layer
starts at zero, so every transform starts as the identity.

An inverse autoregressive flow (IAF) is :class:`InverseTransform` around this same class: its
``forward`` (data -> noise) takes ``D`` passes and its ``inverse`` (sampling) one.

Gradients of the sequential direction use the implicit function theorem instead of storing ``D``
passes for backpropagation: at the solution ``x* = F(x*, z, theta)`` with ``J = dF/dx`` strictly
triangular (nilpotent), ``dx*/d(z, theta) = (I - J)^{-1} dF/d(z, theta)``; the backward pass
solves ``v = b + v J`` by ``D - 1`` vector-Jacobian products (exact, since ``J^D = 0``), in the
memory of one pass.

Efficient masks. Inputs are put in their order (a cheap gather), hidden units are sorted by
their MADE degree (a relabelling: the same random-degree MADE), so every layer's mask is a
*staircase*: row ``r`` reads a prefix of length ``len_r`` of its inputs, ``len`` non-decreasing.
Each layer is stored as a few row blocks of shape ``(rows, max len in the block)`` in one flat
weight (entries past ``len_r`` are masked by one multiply per forward): the masked-out upper
triangle is neither stored, multiplied nor updated by the optimiser, which roughly halves the
FLOPs, the weights and the optimiser's memory traffic of a dense masked layer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from densitylab.models.autoregressive.made import hidden_degrees, made_masks
from densitylab.models.flows.splines import rational_quadratic_spline, spline_params_per_dim
from densitylab.models.flows.transforms import Transform

TRANSFORMS = ("affine", "spline")

Layout = tuple[tuple[int, int], ...]  # (rows, prefix width) of each row block, top to bottom


def staircase_layout(lengths: list[int], blocks: int) -> tuple[Layout, int]:
    """Split rows with non-decreasing prefix ``lengths`` into at most ``blocks`` row blocks of
    about equal height (neighbours of the same width merged); returns ``(rows, width)`` per block
    (``width`` the block's longest prefix) and the number of stored weights."""
    count = len(lengths)
    bounds = sorted({round(k * count / blocks) for k in range(blocks + 1)})
    merged: list[list[int]] = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        width = lengths[stop - 1]
        if merged and merged[-1][1] == width:
            merged[-1][0] += stop - start
        else:
            merged.append([stop - start, width])
    layout = tuple((rows, width) for rows, width in merged)
    return layout, sum(rows * width for rows, width in layout)


class _StaircaseMatmul(torch.autograd.Function):
    """``y = x W^T + b`` for a staircase-masked ``W`` stored block by block in a flat tensor
    (block ``k``: ``rows_k x width_k``, row-major, reading inputs ``0 .. width_k - 1``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                layout: Layout) -> torch.Tensor:
        rows = [r for r, _ in layout]
        pieces = []
        blocks = weight.split([r * w for r, w in layout])
        for (r, width), block, b in zip(layout, blocks, bias.split(rows), strict=True):
            if width == 0:
                pieces.append(b.expand(x.shape[0], r))
            else:
                pieces.append(torch.addmm(b, x[:, :width], block.view(r, width).t()))
        ctx.layout = layout
        ctx.save_for_backward(x, weight)
        return torch.cat(pieces, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        layout = ctx.layout
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        sizes = [r * w for r, w in layout]
        grad_x = torch.zeros_like(x) if need_x else None
        grad_w = torch.empty_like(weight) if need_w else None
        grad_blocks = grad_w.split(sizes) if grad_w is not None else [None] * len(layout)
        pieces = grad.split([r for r, _ in layout], 1)
        for (r, width), g, block, grad_block in zip(layout, pieces, weight.split(sizes), grad_blocks,
                                                    strict=True):
            if width == 0:
                continue
            if grad_block is not None:
                torch.mm(g.t(), x[:, :width], out=grad_block.view(r, width))
            if grad_x is not None:  # a column slice is a BLAS matrix with a leading dimension
                grad_x[:, :width].addmm_(g, block.view(r, width))
        return grad_x, grad_w, grad.sum(0) if need_b else None, None


class StaircaseLinear(nn.Module):
    """A masked linear layer whose ``(out, in)`` mask is a staircase: row ``r`` reads inputs
    ``0 .. len_r - 1`` with ``len`` non-decreasing. Only the row blocks' rectangles are stored."""

    def __init__(self, mask: torch.Tensor, blocks: int = 8) -> None:
        super().__init__()
        out_features, self.in_features = mask.shape
        lengths = mask.sum(1)
        staircase = torch.arange(self.in_features)[None, :] < lengths[:, None]
        if not torch.equal(mask.bool(), staircase) or bool((lengths.diff() < 0).any()):
            raise ValueError("StaircaseLinear needs a staircase mask (prefix rows, non-decreasing)")
        self.layout, size = staircase_layout(lengths.tolist(), max(1, min(blocks, out_features)))
        weight, keep = torch.empty(size), torch.empty(size)
        start = offset = 0
        for count, width in self.layout:
            stop = start + count
            rows = lengths[start:stop, None]
            block_mask = torch.arange(width)[None, :] < rows
            bound = rows.clamp_min(1).float().rsqrt()  # nn.Linear's init with the true fan-in
            block = (torch.rand(stop - start, width) * 2 - 1) * bound
            weight[offset : offset + block.numel()] = block.flatten()
            keep[offset : offset + block.numel()] = block_mask.flatten().float()
            start, offset = stop, offset + block.numel()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter((torch.rand(out_features) * 2 - 1) * lengths.clamp_min(1).float().rsqrt())
        self.register_buffer("mask", keep, persistent=False)  # rebuilt from the degrees
        self.out_features = out_features

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, in) -> (B, out)``; ``weight`` (already masked) and ``bias`` default to the
        layer's own."""
        weight = self.masked_weight() if weight is None else weight
        return _StaircaseMatmul.apply(x, weight, self.bias if bias is None else bias, self.layout)

    def dense_weight(self) -> torch.Tensor:
        """The full ``(out, in)`` masked matrix (for tests and inspection)."""
        dense = self.weight.new_zeros(self.out_features, self.in_features)
        blocks = self.masked_weight().split([rows * width for rows, width in self.layout])
        start = 0
        for (rows, width), block in zip(self.layout, blocks, strict=True):
            dense[start : start + rows, :width] = block.view(rows, width)
            start += rows
        return dense


class MADEConditioner(nn.Module):
    """MADE on inputs given in their autoregressive order (input ``k`` has degree ``k + 1``):
    ``(B, D) -> (B, D, P)``, the ``P`` outputs of position ``k`` reading only inputs ``< k``.
    Hidden degrees are drawn as in MADE (``made.hidden_degrees``) and sorted; ReLU between layers;
    the last layer starts at zero."""

    def __init__(self, dim: int, hidden_sizes: list[int], params_per_dim: int, seed: int = 0,
                 blocks: int = 8) -> None:
        super().__init__()
        self.dim, self.params_per_dim = dim, params_per_dim
        generator = torch.Generator().manual_seed(seed)
        hidden = [d.sort().values for d in hidden_degrees(list(hidden_sizes), dim, generator)]
        masks = made_masks(torch.arange(1, dim + 1), hidden, params_per_dim)
        self.layers = nn.ModuleList(StaircaseLinear(mask, blocks) for mask in masks)
        with torch.no_grad():
            self.layers[-1].weight.zero_()
            self.layers[-1].bias.zero_()

    def tensors(self) -> list[torch.Tensor]:
        """``[masked weight, bias]`` of every layer: computed once, reused for many passes."""
        return [t for layer in self.layers for t in (layer.masked_weight(), layer.bias)]

    def forward(self, x: torch.Tensor, tensors: list[torch.Tensor] | None = None) -> torch.Tensor:
        tensors = self.tensors() if tensors is None else tensors
        h = x
        for index, layer in enumerate(self.layers):
            h = layer(h, tensors[2 * index], tensors[2 * index + 1])
            if index < len(self.layers) - 1:
                h = F.relu(h)
        return h.view(x.shape[0], self.dim, self.params_per_dim)


class _ImplicitInverse(torch.autograd.Function):
    """``x* = solve(z)`` (``D`` passes without a graph); backward by the implicit function theorem
    (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, transform: MaskedAutoregressiveTransform, z: torch.Tensor,
                *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, logabsdet = transform.solve(z, list(tensors))
        ctx.transform = transform
        ctx.save_for_backward(z, x, *tensors)
        return x, logabsdet

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_x: torch.Tensor, grad_logdet: torch.Tensor) -> tuple[Any, ...]:
        transform = ctx.transform
        z, x, *tensors = ctx.saved_tensors
        with torch.enable_grad():
            point = x.detach().requires_grad_()
            fixed = [t.detach() for t in tensors]
            step, logdet = transform.inverse_step(z.detach(), transform.net(point, fixed))
            b = grad_x + _vjp(logdet, point, grad_logdet)
            v = b
            for _ in range(transform.dim - 1):  # v = b (I + J + ... + J^{D-1}) = b (I - J)^{-1}
                v = b + _vjp(step, point, v)
            needs = ctx.needs_input_grad[1:]
            live_z = z.detach().requires_grad_(needs[0])
            live = [t.detach().requires_grad_(n) for t, n in zip(tensors, needs[1:], strict=True)]
            step, logdet = transform.inverse_step(live_z, transform.net(x.detach(), live))
            wanted = [t for t in (live_z, *live) if t.requires_grad]
            grads = iter(torch.autograd.grad((step, logdet), wanted, (v, grad_logdet), allow_unused=True))
        out = [next(grads) if t.requires_grad else None for t in (live_z, *live)]
        return (None, *out)


def _vjp(output: torch.Tensor, point: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``grad^T d output / d point`` (zero where ``output`` does not depend on ``point``)."""
    (value,) = torch.autograd.grad(output, point, grad, retain_graph=True, allow_unused=True)
    return torch.zeros_like(point) if value is None else value


class MaskedAutoregressiveTransform(Transform):
    """MAF's transform on ``(B, D)``: ``forward`` one MADE pass, ``inverse`` ``D`` passes.

    ``order``: the autoregressive order, a permutation of ``0..D-1`` (``order[k]`` is the ``k``-th
    dimension; default ``0..D-1``). ``transform``: ``"affine"`` or ``"spline"`` (``bins`` bins on
    ``[-tail_bound, tail_bound]``, identity outside). ``scale_bound``: the affine log-scale's
    soft clamp. ``seed`` draws the MADE degrees. ``blocks``: row blocks per layer (speed only).
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
        self.register_buffer("order", order.clone(), persistent=False)
        self.register_buffer("inverse_order", order.argsort(), persistent=False)
        self.natural_order = bool(torch.equal(order, torch.arange(dim)))
        per_dim = 2 if transform == "affine" else spline_params_per_dim(bins)
        self.net = MADEConditioner(dim, hidden_sizes, per_dim, seed, blocks)

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

    def solve(self, z: torch.Tensor, tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``D`` passes: after pass ``k`` the first ``k`` positions of ``x`` are exact."""
        x, logabsdet = z, z.new_zeros(z.shape[0])
        for _ in range(self.dim):
            x, logabsdet = self.inverse_step(z, self.net(x, tensors))
        return x, logabsdet

    # ----- the Transform protocol ----------------------------------------------------------------
    def _ordered(self, v: torch.Tensor) -> torch.Tensor:
        return v if self.natural_order else v[:, self.order]

    def _unordered(self, v: torch.Tensor) -> torch.Tensor:
        return v if self.natural_order else v[:, self.inverse_order]

    def forward(self, x, cond=None):
        ordered = self._ordered(x)
        z, logabsdet = self.forward_step(ordered, self.net(ordered))
        return self._unordered(z), logabsdet

    def inverse(self, z, cond=None):
        ordered = self._ordered(z)
        tensors = self.net.tensors()
        if torch.is_grad_enabled() and (z.requires_grad or any(t.requires_grad for t in tensors)):
            x, logabsdet = _ImplicitInverse.apply(self, ordered, *tensors)
        else:
            x, logabsdet = self.solve(ordered, tensors)
        return self._unordered(x), logabsdet


class InverseTransform(Transform):
    """``inner`` run backwards: ``forward = inner.inverse``, ``inverse = inner.forward``."""

    def __init__(self, inner: Transform) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x, cond=None):
        return self.inner.inverse(x, cond)

    def inverse(self, z, cond=None):
        return self.inner(z, cond)
