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
    its bias;
    ``first_bias (B, out_0)`` an optional per-example term added to the first layer's
    pre-activations (a label or context embedding). Hidden layers are followed by
    ``activation``; the last layer's rows ``t * P .. t * P + P - 1`` are the outputs of position
    ``t``. Call :meth:`step` with ``t = 0, 1, ..., D - 1`` in turn, each time after writing input
    ``t - 1`` into ``inputs[t - 1]`` (``inputs`` is ``(D, B)``). No autograd."""

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
        self.inputs = like.new_zeros(dim, batch)
        self.hidden = [like.new_zeros(w.shape[0], batch) for w in weights[:-1]]
        sources = [self.inputs, *self.hidden]
        self.plan: list[list[tuple]] = [[] for _ in range(dim)]
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
            target, source = self.hidden[index], sources[index]
            for t, (start, stop) in enumerate(zip(starts, stops, strict=True)):
                if stop > start:
                    width = int(extent[stop - 1])
                    self.plan[t].append((column[start:stop], weight[start:stop, :width],
                                         source[:width], target[start:stop]))

    def _output_plan(self, weight: torch.Tensor, column: torch.Tensor, extent: torch.Tensor,
                     ready: torch.Tensor, source: torch.Tensor) -> list[tuple]:
        per_dim, plan = self.per_dim, []
        if bool((ready.view(self.dim, per_dim).amax(1) > torch.arange(self.dim)).any()):
            raise ValueError("an output reads an input at or after its own position")
        for t in range(self.dim):
            rows = slice(t * per_dim, (t + 1) * per_dim)
            width = int(extent[rows].max())
            plan.append((column[rows], weight[rows, :width], source[:width]))
        return plan

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
