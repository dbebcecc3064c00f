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
Each layer is stored as 8 row blocks, block ``k`` a ``(rows_k, max len in the block)`` rectangle
(transposed, in one flat weight), and computed by one matrix product per block: the masked-out
upper triangle is neither stored, multiplied nor updated by the optimiser, which roughly halves
the FLOPs, the weights and the optimiser's memory traffic of a dense masked layer (measured: 1.4-1.7x
the training speed of dense masked MADEs of the same size on a 2-core CPU). The few masked entries
inside the rectangles (their "tails") are held at exactly zero: their gradient is zeroed in the
backward pass, so optimisers leave them at zero, and each forward pass re-zeroes them in place
(a no-op, unless something wrote there), so no mask multiplies the whole weight at every step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from densitylab.models.autoregressive.made import hidden_degrees, made_masks, sequential_degrees
from densitylab.models.flows.splines import rational_quadratic_spline, spline_params_per_dim
from densitylab.models.flows.transforms import Transform

TRANSFORMS = ("affine", "spline")
DEGREES = ("sequential", "random")

Layout = tuple[tuple[int, int, int], ...]  # per row block: (rows, width, full), top to bottom


def staircase_layout(lengths: list[int], blocks: int) -> tuple[Layout, int]:
    """Split rows with non-decreasing prefix ``lengths`` into at most ``blocks`` row blocks of
    about equal height (neighbours of the same width merged). Block ``(rows, width, full)`` stores
    ``rows x width`` weights (``width``: its longest prefix); columns ``< full`` (its shortest
    prefix) are read by every row, the strip ``full .. width - 1`` by some. Returns the layout and
    the number of stored weights."""
    count = len(lengths)
    bounds = sorted({round(k * count / blocks) for k in range(blocks + 1)})
    merged: list[list[int]] = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        width = lengths[stop - 1]
        if merged and merged[-1][1] == width:
            merged[-1][0] += stop - start
        else:
            merged.append([stop - start, width, lengths[start]])
    layout = tuple((rows, width, full) for rows, width, full in merged)
    return layout, sum(rows * width for rows, width, _ in layout)


class _Views(NamedTuple):
    """Views into a :class:`StaircaseLinear` weight (see :meth:`StaircaseLinear.views`)."""

    key: tuple
    blocks: list[torch.Tensor]  # V_k, (width_k, rows_k)
    blocks_t: list[torch.Tensor]  # V_k^T
    masks: list[torch.Tensor]  # 0/1 masks of the tails V_k[full_k:] (empty where none)
    tails: list[torch.Tensor]  # the non-empty tails
    tail_masks: list[torch.Tensor]  # and their masks


class _StaircaseMatmul(torch.autograd.Function):
    """``y = x W^T + b`` for a staircase-masked ``W`` stored block by block, transposed, in a flat
    tensor: block ``k`` is ``V_k = W_k^T`` (``width_k x rows_k``, row-major), reading inputs
    ``0 .. width_k - 1``. Masked entries lie in the tails ``V_k[full_k:]``, must be zero
    (:meth:`StaircaseLinear.clean_`), and get a zero gradient here, so every optimiser that leaves
    zero-gradient zeros alone (SGD, Adam, AdamW, ...) keeps them at zero."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, layout: Layout,
                views: _Views) -> torch.Tensor:
        pieces = []
        for (rows, width, _), block, b in zip(layout, views.blocks, bias.split([r for r, _, _ in layout]),
                                              strict=True):
            pieces.append(b.expand(x.shape[0], rows) if width == 0
                          else torch.addmm(b, x[:, :width], block))
        ctx.layout, ctx.views = layout, views
        ctx.save_for_backward(x, weight)
        return torch.cat(pieces, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors  # (unpacking checks that nothing changed them)
        layout, views = ctx.layout, ctx.views
        # under autocast the forward ran in bf16/fp16; the backward runs in the weight's type
        # (autograd casts each returned gradient to its input's type)
        x, grad = x.to(weight.dtype), grad.to(weight.dtype)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        pieces = grad.split([r for r, _, _ in layout], 1)
        grad_w = None
        if need_w:
            x_t, grad_w = x.t(), torch.empty_like(weight)
            tails, masks = [], []
            for (rows, width, full), g, grad_block, mask in zip(
                    layout, pieces, grad_w.split([r * w for r, w, _ in layout]), views.masks, strict=True):
                if width:
                    grad_block = torch.mm(x_t[:width], g, out=grad_block.view(width, rows))
                    if width > full:
                        tails.append(grad_block[full:])
                        masks.append(mask)
            if tails:
                torch._foreach_mul_(tails, masks)
        grad_x = None
        if need_x:  # a column slice is a BLAS matrix with a leading dimension
            grad_x = torch.zeros_like(x)
            for (_, width, _), g, block_t in zip(layout, pieces, views.blocks_t, strict=True):
                if width:
                    grad_x[:, :width].addmm_(g, block_t)
        return grad_x, grad_w, grad.sum(0) if need_b else None, None, None


class _Permute(torch.autograd.Function):
    """``x[:, order]`` with the gather ``g[:, inverse]`` as its backward (not a scatter-add)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.inverse = inverse
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return grad.index_select(1, ctx.inverse), None, None


class StaircaseLinear(nn.Module):
    """A masked linear layer whose ``(out, in)`` mask is a staircase: row ``r`` reads inputs
    ``0 .. len_r - 1`` with ``len`` non-decreasing. Only the row blocks' rectangles are stored
    (transposed, see :class:`_StaircaseMatmul`), their masked entries held at zero."""

    def __init__(self, mask: torch.Tensor, blocks: int = 8) -> None:
        super().__init__()
        out_features, self.in_features = mask.shape
        lengths = mask.sum(1)
        staircase = torch.arange(self.in_features)[None, :] < lengths[:, None]
        if not torch.equal(mask.bool(), staircase) or bool((lengths.diff() < 0).any()):
            raise ValueError("StaircaseLinear needs a staircase mask (prefix rows, non-decreasing)")
        self.layout, _ = staircase_layout(lengths.tolist(), max(1, min(blocks, out_features)))
        weights, tails, start = [], [], 0
        for rows, width, full in self.layout:
            length = lengths[start : start + rows]
            keep = torch.arange(width)[:, None] < length[None, :]  # (width, rows): transposed
            bound = length.clamp_min(1).float().rsqrt()  # nn.Linear's init with the true fan-in
            weights.append(((torch.rand(width, rows) * 2 - 1) * bound * keep).flatten())
            tails.append(keep[full:].flatten().float())
            start += rows
        self.weight = nn.Parameter(torch.cat(weights))
        self.bias = nn.Parameter((torch.rand(out_features) * 2 - 1) * lengths.clamp_min(1).float().rsqrt())
        self.register_buffer("tail_mask", torch.cat(tails), persistent=False)  # from the degrees
        self._views: _Views | None = None
        self.out_features = out_features
        self.connections = int(lengths.sum())

    def views(self, weight: torch.Tensor) -> _Views:
        """Views of ``weight``'s blocks and of their tails, and the tails' masks, kept while
        ``weight``'s storage is the same (optimisers update in place): made once, not per step."""
        key = (weight.data_ptr(), weight.numel(), weight.dtype, weight.device)
        if self._views is None or self._views.key != key:
            # through .data: cleaning the tails in place is not autograd's business
            flat = weight.data.split([rows * width for rows, width, _ in self.layout])
            blocks = [b.view(width, rows) for (rows, width, _), b in zip(self.layout, flat, strict=True)]
            pieces = self.tail_mask.split([rows * (width - full) for rows, width, full in self.layout])
            masks = [m.view(width - full, rows) for m, (rows, width, full) in
                     zip(pieces, self.layout, strict=True)]
            with_tail = [k for k, (_, width, full) in enumerate(self.layout) if width > full]
            self._views = _Views(key, blocks, [b.t() for b in blocks], masks,
                                 [blocks[k][self.layout[k][2]:] for k in with_tail],
                                 [masks[k] for k in with_tail])  # they keep the storage alive
        return self._views

    def _apply(self, fn, recurse=True):  # .to(), .double(), ...: new storage, new views
        self._views = None
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def clean_(self) -> None:
        """Zero the masked entries of the weight (a no-op unless something wrote there)."""
        views = self.views(self.weight)
        if views.tails:
            torch._foreach_mul_(views.tails, views.tail_masks)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, in) -> (B, out)``; ``weight`` (clean, shaped like the layer's) and ``bias``
        default to the layer's own."""
        if weight is None:
            self.clean_()
            weight = self.weight
        return _StaircaseMatmul.apply(x, weight, self.bias if bias is None else bias, self.layout,
                                      self.views(weight))

    def dense_weight(self) -> torch.Tensor:
        """The full ``(out, in)`` masked matrix (for tests and inspection)."""
        self.clean_()
        dense = self.weight.new_zeros(self.out_features, self.in_features)
        blocks = self.weight.split([rows * width for rows, width, _ in self.layout])
        start = 0
        for (rows, width, _), block in zip(self.layout, blocks, strict=True):
            dense[start : start + rows, :width] = block.view(width, rows).t()
            start += rows
        return dense


class MADEConditioner(nn.Module):
    """MADE on inputs given in their autoregressive order (input ``k`` has degree ``k + 1``):
    ``(B, D) -> (B, D, P)``, the ``P`` outputs of position ``k`` reading only inputs ``< k``.
    Hidden degrees: ``sequential`` (the MAF paper's code: unit ``k`` of every layer has degree
    ``k % (D - 1) + 1``, ``made.sequential_degrees``) or ``random`` (drawn as in MADE,
    ``made.hidden_degrees``, with ``seed``), sorted; ReLU between layers; the last layer starts
    at zero."""

    def __init__(self, dim: int, hidden_sizes: list[int], params_per_dim: int, seed: int = 0,
                 blocks: int = 8, degrees: str = "sequential") -> None:
        super().__init__()
        if degrees not in DEGREES:
            raise ValueError(f"degrees must be one of {', '.join(DEGREES)}, got {degrees!r}")
        self.dim, self.params_per_dim = dim, params_per_dim
        if degrees == "random":
            drawn = hidden_degrees(list(hidden_sizes), dim, torch.Generator().manual_seed(seed))
        else:
            drawn = sequential_degrees(list(hidden_sizes), dim)
        hidden = [d.sort().values for d in drawn]
        masks = made_masks(torch.arange(1, dim + 1), hidden, params_per_dim)
        self.layers = nn.ModuleList(StaircaseLinear(mask, blocks) for mask in masks)
        with torch.no_grad():
            self.layers[-1].weight.zero_()
            self.layers[-1].bias.zero_()

    def tensors(self) -> list[torch.Tensor]:
        """``[weight, bias]`` of every layer (the parameters, cleaned), for passes that take
        them explicitly."""
        for layer in self.layers:
            layer.clean_()
        return [t for layer in self.layers for t in (layer.weight, layer.bias)]

    def forward(self, x: torch.Tensor, tensors: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``(B, D) -> (B, D, P)``, with the layers' own weights or the given :meth:`tensors`."""
        h = x
        for index, layer in enumerate(self.layers):
            if tensors is None:
                h = layer(h)
            else:
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
    soft clamp. ``degrees``: the MADE's hidden degrees, ``sequential`` or ``random`` (drawn with
    ``seed``). ``blocks``: row blocks per layer (speed only).
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
        self.net = MADEConditioner(dim, hidden_sizes, per_dim, seed, blocks, degrees)

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
        return v if self.natural_order else _Permute.apply(v, self.order, self.inverse_order)

    def _unordered(self, v: torch.Tensor) -> torch.Tensor:
        return v if self.natural_order else _Permute.apply(v, self.inverse_order, self.order)

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
