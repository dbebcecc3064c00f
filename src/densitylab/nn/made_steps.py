"""A masked MLP evaluated one autoregressive position at a time, each unit computed once.

In a MADE (Germain et al., 2015) whose inputs are in their autoregressive order, input ``k`` has
degree ``k + 1``, and with the hidden units sorted by degree every layer reads a prefix of the
layer below (a staircase mask, :mod:`densitylab.nn.staircase`). A unit can be computed as soon as
the last input it reads is known; call that its *ready step*: for an input ``k`` it is
``k + 1``, for a unit reading the prefix ``0 .. len - 1`` of the layer below it is the ready step
of unit ``len - 1`` there (``0`` for ``len = 0``). The outputs of position ``t`` are ready at step
``t`` or before (the mask's ``>``), so step ``t`` computes, in every hidden layer, the units whose
ready step is ``t`` (a contiguous range, since ready steps are non-decreasing), then the ``P``
outputs of position ``t``. Over the ``D`` steps every unit is computed exactly once: the
arithmetic of one full pass, instead of the ``D`` full passes of running the whole network at
every step.

:meth:`MaskedMLPSteps.reverse` runs the same schedule backwards for the sequential direction's
gradient: it solves ``v = b + v J``, with ``J`` the strictly triangular Jacobian of
``y_t = g_t(params_t(x_<t))`` w.r.t. ``x`` at the point the steps computed, by back-substitution
from the last position. A unit's gradient is complete once every position reading it has been
handled, which, going backwards, is just before its ready step; so step ``t`` (in reverse) first
backpropagates the units whose ready step is ``t + 1``, which completes ``v_t``, then feeds
``v_t dg_t/dparams_t`` into the outputs of position ``t``. The cost is again one pass, against the
``D - 1`` vector-Jacobian products of the fixed-point form ``v <- b + v J``.

The activations are kept transposed, ``(units, B)``, so the new units of a step are one
contiguous block written by one matrix product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ACTIVATIONS", "MaskedMLPSteps", "ready_steps"]

ACTIVATIONS = ("relu", "silu")


def ready_steps(extents: torch.Tensor, below: torch.Tensor) -> torch.Tensor:
    """Ready step of each row of a layer whose row ``r`` reads units ``< extents[r]`` of the layer
    below, whose ready steps (non-decreasing) are ``below``."""
    index = (extents - 1).clamp_min(0)
    return torch.where(extents > 0, below[index], torch.zeros_like(extents))


class MaskedMLPSteps:
    """Incremental evaluation of a staircase-masked MLP on a batch of ``batch`` inputs.

    ``weights[l]`` is layer ``l``'s dense masked ``(out, in)`` matrix (zero where masked) and
    ``extents[l]`` says that its row ``r`` reads only inputs ``< extents[r]`` (non-decreasing: a
    staircase; from the mask, not from the weights, which may be zero inside it); ``biases[l]``
    its bias; ``first_bias (B, out_0)`` an optional per-example term added to the first layer's
    pre-activations (a label or context embedding). Hidden layers are followed by
    ``activation``; the last layer's rows ``t * P .. t * P + P - 1`` are the outputs of position
    ``t``. Call :meth:`step` with ``t = 0, 1, ..., D - 1`` in turn, each time after writing input
    ``t - 1`` into ``inputs[t - 1]`` (``inputs`` is ``(D, B)``); then, with ReLU,
    :meth:`reverse`. No autograd."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor],
                 extents: list[torch.Tensor], params_per_dim: int, activation: str, batch: int,
                 first_bias: torch.Tensor | None = None) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        dim, per_dim = weights[0].shape[1], params_per_dim
        if weights[-1].shape[0] != dim * per_dim:
            raise ValueError(f"the last layer must have {dim} x {per_dim} rows, got {weights[-1].shape[0]}")
        like = weights[0]
        self.dim, self.per_dim, self.silu = dim, per_dim, activation == "silu"
        self.weights = weights
        self.inputs = like.new_zeros(dim, batch)
        self.hidden = [like.new_zeros(w.shape[0], batch) for w in weights[:-1]]
        sources = [self.inputs, *self.hidden]
        self.plan: list[list[tuple]] = [[] for _ in range(dim)]
        self.groups: list[list[tuple[int, int, int, int]]] = [[] for _ in range(dim)]
        ready = torch.arange(1, dim + 1)
        for index, (weight, bias, extent) in enumerate(zip(weights, biases, extents, strict=True)):
            extent = extent.cpu().long()
            ready = ready_steps(extent, ready)
            if bool((ready.diff() < 0).any()) or bool((extent.diff() < 0).any()):
                raise ValueError("the masks must be staircases (prefix rows, non-decreasing)")
            column = bias[:, None]
            if index == 0 and first_bias is not None:
                column = column + first_bias.t()
            if index == len(weights) - 1:
                self.outputs = self._output_plan(weight, column, extent, ready, sources[index])
                break
            starts = torch.searchsorted(ready, torch.arange(dim), right=False).tolist()
            stops = torch.searchsorted(ready, torch.arange(dim), right=True).tolist()
            target, source, widths = self.hidden[index], sources[index], extent.tolist()
            for t, (start, stop) in enumerate(zip(starts, stops, strict=True)):
                if stop > start:
                    width = widths[stop - 1]
                    self.plan[t].append((column[start:stop], weight[start:stop, :width],
                                         source[:width], target[start:stop]))
                    self.groups[t].append((index, start, stop, width))

    def _output_plan(self, weight: torch.Tensor, column: torch.Tensor, extent: torch.Tensor,
                     ready: torch.Tensor, source: torch.Tensor) -> list[tuple]:
        per_dim = self.per_dim
        if bool((ready.view(self.dim, per_dim).amax(1) > torch.arange(self.dim)).any()):
            raise ValueError("an output reads an input at or after its own position")
        widths = extent.view(self.dim, per_dim).amax(1).tolist()
        return [(column[t * per_dim : (t + 1) * per_dim], weight[t * per_dim : (t + 1) * per_dim, :width],
                 source[:width]) for t, width in enumerate(widths)]

    def step(self, t: int) -> torch.Tensor:
        """The ``(P, B)`` outputs of position ``t`` (a new tensor); computes the units that became
        ready."""
        for column, weight, source, target in self.plan[t]:
            torch.addmm(column, weight, source, out=target)
            if self.silu:
                F.silu(target, inplace=True)
            else:
                target.relu_()
        column, weight, source = self.outputs[t]
        return torch.addmm(column, weight, source)

    @torch.no_grad()
    def reverse(self, seed: torch.Tensor, jacobian: torch.Tensor) -> torch.Tensor:
        """``v (D, B)`` with ``v = seed + v J`` after all ``D`` steps (see the module docstring):
        ``seed (D, B)``; ``jacobian (D, P, B)``, ``d y_t / d params_t`` of the elementwise map
        ``y_t = g_t(params_t)`` each position's outputs feed. ReLU networks only."""
        if self.silu:
            raise ValueError("reverse needs a ReLU network (the activations hold the derivative)")
        v = torch.zeros_like(self.inputs)
        grads = [torch.zeros_like(h) for h in self.hidden]
        below = [v, *grads]  # where each layer's input gradients go
        for t in reversed(range(self.dim)):
            for layer, start, stop, width in (reversed(self.groups[t + 1]) if t + 1 < self.dim else ()):
                delta = grads[layer][start:stop] * (self.hidden[layer][start:stop] > 0)
                below[layer][:width].addmm_(self.weights[layer][start:stop, :width].t(), delta)
            v[t] += seed[t]
            _, weight, _ = self.outputs[t]
            if weight.shape[1]:
                below[-1][: weight.shape[1]].addmm_(weight.t(), jacobian[t] * v[t])
        return v
