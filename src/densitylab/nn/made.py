"""The masked MLP of MADE (Germain, Gregor, Murray & Larochelle, 2015, "MADE: Masked Autoencoder
for Distribution Estimation"): degrees, masks, and the conditioner of the autoregressive flows.

Degrees (the paper's ``m``): input ``d`` has degree ``m(d)`` in ``1..D`` (its rank in the
autoregressive order, plus one); hidden unit ``k`` of layer ``l`` reads unit ``j`` of the layer
below when ``m^l(k) >= m^{l-1}(j)``, and the outputs of input dimension ``d`` read hidden unit
``k`` when ``m(d) > m^L(k)`` (strictly). The product of the masks is then zero wherever
``m(input) >= m(output)``: output ``d`` depends on the inputs before ``d`` in the order only.

:class:`MaskedMLP` is the conditioner of MAF, IAF and the autoregressive CDF flow: inputs in
their order (input ``k`` has degree ``k + 1``), hidden units sorted by degree, so every mask is a
staircase (:class:`~densitylab.nn.staircase.StaircaseLinear`). An optional context ``c`` of
``context_features`` values (as in nflows and zuko) enters every unit of the first layer through
an unmasked linear map, ``h^1 = act(M^1 x + W_c c + b^1)``. The context counts as inputs of
degree 0, so hidden degrees start at 0 (a unit of degree 0 reads the context alone): every output,
the first position's included, may depend on all of ``c``, and still only on the inputs before
it. :meth:`MaskedMLP.steps` evaluates it position by
position, each unit once (:mod:`densitylab.nn.made_steps`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from densitylab.nn.made_steps import ACTIVATIONS, MaskedMLPSteps
from densitylab.nn.staircase import StaircaseLinear

__all__ = ["ACTIVATIONS", "DEGREES", "MaskedLinear", "MaskedMLP", "hidden_degrees", "made_masks",
           "sequential_degrees"]

DEGREES = ("sequential", "random")


def hidden_degrees(sizes: list[int], dim: int, generator: torch.Generator,
                   lowest: int = 1) -> list[torch.Tensor]:
    """Degrees of each hidden layer, uniform in ``[min of the layer below, D - 1]`` (MADE's); the
    inputs' lowest degree is ``lowest``. With ``lowest = 0`` (a context counted as inputs of
    degree 0), unit 0 of every layer has degree 0, so the first position's outputs read the
    context."""
    degrees, low = [], lowest
    for size in sizes:
        layer = torch.randint(low, max(dim - 1, low) + 1, (size,), generator=generator)
        if lowest == 0:
            layer[0] = 0
        degrees.append(layer)
        low = int(layer.min())
    return degrees


def sequential_degrees(sizes: list[int], dim: int, lowest: int = 1) -> list[torch.Tensor]:
    """Degrees of each hidden layer cycling through ``1 .. D - 1`` (``k % (D - 1) + 1`` for unit
    ``k``): the "sequential" degrees of the MAF paper's code, every degree as often as the width
    allows (with fewer units than ``D - 1``, the degrees ``1 .. width``). With ``lowest = 0``
    they cycle through ``0 .. D - 1``."""
    if lowest == 0:
        return [torch.arange(size) % dim for size in sizes]
    top = max(1, dim - 1)
    return [torch.arange(size) % top + min(1, dim - 1) for size in sizes]


def made_masks(
    input_degrees: torch.Tensor, hidden: list[torch.Tensor], outputs_per_dim: int
) -> list[torch.Tensor]:
    """The ``(out, in)`` boolean masks of every layer: ``>=`` into hidden units, ``>`` into the
    ``outputs_per_dim`` outputs of each input dimension (rows ``d * P .. d * P + P - 1``)."""
    masks, below = [], input_degrees
    for layer in hidden:
        masks.append(layer[:, None] >= below[None, :])
        below = layer
    masks.append((input_degrees[:, None] > below[None, :]).repeat_interleave(outputs_per_dim, 0))
    return masks


class MaskedLinear(nn.Linear):
    """A dense linear layer with one of several stacked ``(out, in)`` 0/1 masks on its weight
    (MADE's mask sets share the weights)."""

    def __init__(self, masks: torch.Tensor, bias: bool = True) -> None:
        _, out_features, in_features = masks.shape
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("masks", masks.bool(), persistent=False)  # rebuilt from the config

    def masked_weight(self, mask: int = 0) -> torch.Tensor:
        return self.weight * self.masks[mask]

    def forward(self, x: torch.Tensor, mask: int = 0, rows: slice | None = None) -> torch.Tensor:
        """``x (B, in)`` -> ``(B, out)`` with mask set ``mask``; only output ``rows`` if given."""
        weight, allowed, bias = self.weight, self.masks[mask], self.bias
        if rows is not None:
            weight, allowed = weight[rows], allowed[rows]
            bias = None if bias is None else bias[rows]
        return F.linear(x, weight * allowed, bias)


class MaskedMLP(nn.Module):
    """``(B, D) -> (B, D, P)`` on inputs given in their autoregressive order: the ``P`` outputs of
    position ``k`` read only inputs ``< k`` (and all of the context, if any).

    ``degrees``: the hidden degrees, ``sequential`` (:func:`sequential_degrees`) or ``random``
    (:func:`hidden_degrees` drawn with ``seed``), sorted; ``activation`` between layers (``relu``
    or ``silu``); the last layer's initial weights and bias are scaled by ``output_scale`` (``0``:
    every output starts at zero); ``blocks``: row blocks per staircase layer (speed only);
    ``context_features > 0``: a ``(B, context_features)`` context enters the first layer."""

    def __init__(self, dim: int, hidden_sizes: list[int], params_per_dim: int,
                 degrees: str = "sequential", seed: int = 0, blocks: int = 8,
                 activation: str = "relu", context_features: int = 0,
                 output_scale: float = 0.0) -> None:
        super().__init__()
        if degrees not in DEGREES:
            raise ValueError(f"degrees must be one of {', '.join(DEGREES)}, got {degrees!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        if context_features < 0:
            raise ValueError(f"context_features must be >= 0, got {context_features}")
        self.dim, self.params_per_dim, self.activation = dim, params_per_dim, activation
        lowest = 0 if context_features else 1  # the context: inputs of degree 0
        if degrees == "random":
            drawn = hidden_degrees(list(hidden_sizes), dim, torch.Generator().manual_seed(seed), lowest)
        else:
            drawn = sequential_degrees(list(hidden_sizes), dim, lowest)
        hidden = [d.sort().values for d in drawn]
        masks = made_masks(torch.arange(1, dim + 1), hidden, params_per_dim)
        self.layers = nn.ModuleList(StaircaseLinear(mask, blocks) for mask in masks)
        self.context_features = int(context_features)
        first = self.layers[0].out_features
        self.context = nn.Linear(context_features, first, bias=False) if context_features else None
        with torch.no_grad():
            self.layers[-1].weight.mul_(output_scale)
            self.layers[-1].bias.mul_(output_scale)
            if self.context is not None and len(self.layers) == 1:
                self.context.weight.mul_(output_scale)

    def output_bias(self) -> torch.Tensor:
        """The last layer's bias, ``(D * P,)``, position ``k``'s outputs at ``k * P .. k * P + P - 1``."""
        return self.layers[-1].bias

    def check_context(self, context: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """``context`` as ``(batch, context_features)``; a ``ValueError`` when it is given to a
        network without context or missing from one with context."""
        if self.context is None:
            if context is not None:
                raise ValueError("this masked autoregressive network was built without context "
                                 "(context_features=0): it takes no cond")
            return None
        if context is None:
            raise ValueError(f"this masked autoregressive network needs a context (cond) of shape "
                             f"(batch, {self.context_features})")
        context = torch.as_tensor(context)
        if context.dim() == 1:
            context = context.unsqueeze(0)
        if context.dim() != 2 or context.shape[1] != self.context_features \
                or context.shape[0] not in (1, batch):
            raise ValueError(f"the context (cond) must have shape ({batch}, {self.context_features}), "
                             f"got {tuple(context.shape)}")
        return context.expand(batch, -1)

    def tensors(self) -> list[torch.Tensor]:
        """``[weight, bias]`` of every layer (the parameters, cleaned), then the context map's
        weight when there is one: for passes that take them explicitly."""
        for layer in self.layers:
            layer.clean_()
        tensors = [t for layer in self.layers for t in (layer.weight, layer.bias)]
        return tensors if self.context is None else [*tensors, self.context.weight]

    def _act(self, h: torch.Tensor) -> torch.Tensor:
        return F.silu(h) if self.activation == "silu" else F.relu(h)

    def forward(self, x: torch.Tensor, tensors: list[torch.Tensor] | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, D) -> (B, D, P)``, with the layers' own weights or the given :meth:`tensors`;
        ``context`` as returned by :meth:`check_context`."""
        h = x
        for index, layer in enumerate(self.layers):
            if tensors is None:
                h = layer(h)
            else:
                h = layer(h, tensors[2 * index], tensors[2 * index + 1])
            if index == 0 and context is not None:
                h = h + F.linear(context.to(h.dtype), self.context.weight if tensors is None else tensors[-1])
            if index < len(self.layers) - 1:
                h = self._act(h)
        return h.view(x.shape[0], self.dim, self.params_per_dim)

    def steps(self, batch: int, tensors: list[torch.Tensor] | None = None,
              context: torch.Tensor | None = None) -> MaskedMLPSteps:
        """The same network evaluated position by position (:class:`MaskedMLPSteps`), with the
        layers' own weights or the given :meth:`tensors`."""
        tensors = self.tensors() if tensors is None else tensors
        with torch.no_grad():
            weights = [layer.dense_weight(tensors[2 * k]) for k, layer in enumerate(self.layers)]
            biases = [tensors[2 * k + 1] for k in range(len(self.layers))]
            first = None if context is None else F.linear(context.to(weights[0].dtype), tensors[-1])
            return MaskedMLPSteps([w.detach() for w in weights], [b.detach() for b in biases],
                                  [layer.lengths for layer in self.layers], self.params_per_dim,
                                  self.activation, batch, first)
