"""Staircase-masked linear layers: the masked layers of a MADE whose inputs are in their
autoregressive order and whose hidden units are sorted by degree.

Then every layer's ``(out, in)`` mask is a *staircase*: row ``r`` reads a prefix of length ``len_r``
of its inputs, ``len`` non-decreasing. The layer is stored as a few row blocks, block ``k`` a
``(rows_k, max len in the block)`` rectangle (transposed, in one flat weight), and computed by one
matrix product per block: the masked-out upper triangle is neither stored, multiplied nor updated
by the optimiser, which roughly halves the arithmetic, the weights and the optimiser's memory
traffic of a dense masked layer. The few masked entries inside the rectangles (their "tails") are
held at exactly zero: their gradient is zeroed in the backward pass, so optimisers leave them at
zero, and each forward pass re-zeroes them in place (a no-op, unless something wrote there), so no
mask multiplies the whole weight at every step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = ["Layout", "StaircaseLinear", "staircase_layout"]

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
        self.register_buffer("lengths", lengths.long(), persistent=False)  # row r reads inputs < len_r
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

    def dense_weight(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The full ``(out, in)`` masked matrix of ``weight`` (clean, shaped like the layer's;
        default: the layer's own)."""
        if weight is None:
            self.clean_()
            weight = self.weight
        dense = weight.new_zeros(self.out_features, self.in_features)
        blocks = weight.split([rows * width for rows, width, _ in self.layout])
        start = 0
        for (rows, width, _), block in zip(self.layout, blocks, strict=True):
            dense[start : start + rows, :width] = block.view(width, rows).t()
            start += rows
        return dense
