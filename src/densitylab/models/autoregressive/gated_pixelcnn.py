"""Gated PixelCNN (van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu, 2016,
"Conditional Image Generation with PixelCNN Decoders").

Same factorisation as PixelCNN, ``log P(x) = sum_i sum_c log P(x_{i,c} | x_{<i}, x_{i,<c}, y)``,
but the conditionals come from two stacks that together see *every* earlier pixel (no blind spot):

- the **vertical stack** ``v`` convolves a ``(k // 2 + 1) x k`` filter over the current row and
  the rows above, so ``v`` at row ``i`` summarises rows ``<= i`` over a window that widens with
  depth; the horizontal stack reads it shifted down one row (``shift``), i.e. rows ``< i`` only;
- the **horizontal stack** ``h`` convolves a ``1 x (k // 2 + 1)`` filter over the pixels to the
  left in the same row (and the current pixel's earlier colour channels: mask A in the first
  layer, B later) and receives the vertical stack through a ``1x1`` link.

Each layer, with ``*`` a convolution, ``g(a, b) = tanh(a) * sigmoid(b)`` and ``e_y`` a learned
per-class bias (zero when unconditional):

    v' = g(p + e_y),    p = W_v * v
    u  = g(W_h * h + L shift(p) + e_y)
    h' = h + W_r u            (the first layer has no residual: its input is the image)
    s  = s + W_s u            (skip connections; W_r and W_s run as one 1x1 convolution)

and the output is ``1x1 -> ReLU -> 1x1`` on ``ReLU(s)``, giving ``P`` parameters per sub-pixel for
the softmax or the logistic-mixture head.

Colour: channels of the horizontal stack, gates, residual and skip paths are split into R, G, B
groups; at the current pixel, group ``j`` reads groups ``< j`` (first layer) or ``<= j``.

Widths: ``hidden_channels`` (the residual stream ``h``), ``vertical_channels`` (``v``) and
``gate_channels`` (``u``) can differ; narrower vertical stacks and gates cut the cost of the
``2 x k`` vertical filter, which dominates a layer's arithmetic. By default both are half the
residual stream (the gates rounded up to whole colour groups), which trains to lower bits/dim at
a fixed CPU budget than the full width.

Deviations: no mask on the ``1x1`` link (after the shift it only carries rows above, so none is
needed); the output layer starts at zero with a bias fitted to the data's marginal histogram, as
in densitylab's PixelCNN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from densitylab.models.autoregressive.base import RasterConvModel
from densitylab.models.autoregressive.gated_pixelcnn_cache import GatedPixelCNNCache, gate
from densitylab.models.base import register_model
from densitylab.nn.conditioning import LabelBias
from densitylab.nn.masked import (
    GroupMaskedConv1x1,
    HorizontalConv,
    VerticalConv,
    channel_groups,
    down_shift,
)


@dataclass
class GatedPixelCNNConfig:
    """Defaults are the best configuration of the 8-minute CPU benchmark (docs/benchmarks.md):
    narrow vertical stack and gates, the discretized logistic mixture head."""

    hidden_channels: int = 32  # width of the horizontal stack's residual stream
    vertical_channels: int | None = None  # width of the vertical stack (None: hidden_channels / 2)
    gate_channels: int | None = None  # width of the gates (None: hidden_channels / 2, whole colours)
    n_layers: int = 5
    first_kernel: int = 7
    kernel: int = 3
    skip_channels: int = 32
    output_hidden: int = 32
    head: str = "logistic-mixture"  # or "softmax"
    mixture_components: int = 5
    n_classes: int = 0  # > 0: class-conditional


class GatedLayer(nn.Module):
    """One layer of both stacks; returns the new ``(v, h)`` and this layer's skip output.

    ``gate_groups`` are the colour groups of the gate units (width ``g``), ``out_groups`` those of
    the residual stream; the residual and skip ``1x1`` maps are one convolution, split after."""

    def __init__(self, in_groups: torch.Tensor, gate_groups: torch.Tensor, out_groups: torch.Tensor,
                 skip_groups: torch.Tensor, kernel: int, first: bool, n_classes: int,
                 vertical_in: int, vertical_width: int) -> None:
        super().__init__()
        in_channels, width = len(in_groups), len(gate_groups)
        pre_groups = torch.cat([gate_groups, gate_groups])  # tanh half and sigmoid half
        self.first = first
        self.n_out = len(out_groups)
        self.vertical = VerticalConv(vertical_in, 2 * vertical_width, kernel)
        self.horizontal = HorizontalConv(in_channels, 2 * width, kernel, in_groups, pre_groups,
                                         "A" if first else "B")
        self.link = nn.Conv2d(2 * vertical_width, 2 * width, 1)
        self.residual_and_skip = GroupMaskedConv1x1(gate_groups, torch.cat([out_groups, skip_groups]))
        self.label_v = LabelBias(n_classes, 2 * vertical_width) if n_classes else None
        self.label_h = LabelBias(n_classes, 2 * width) if n_classes else None

    def forward(self, v: torch.Tensor, h: torch.Tensor, cond: torch.Tensor | None):
        v_pre = self.vertical(v)
        h_pre = self.horizontal(h) + self.link(down_shift(v_pre))
        if cond is not None and self.label_v is not None:
            v_pre, h_pre = v_pre + self.label_v(cond), h_pre + self.label_h(cond)
        residual, skip = self.residual_and_skip(gate(h_pre)).split(
            [self.n_out, self.residual_and_skip.out_channels - self.n_out], dim=1)
        return gate(v_pre), residual if self.first else h + residual, skip


@register_model("gated_pixelcnn", "Gated PixelCNN: vertical + horizontal stacks with tanh*sigmoid "
                "gates, residual and skip connections; no blind spot; exact log-likelihood")
class GatedPixelCNN(RasterConvModel):
    Config = GatedPixelCNNConfig
    default_lr = 1.2e-2
    cached_sampler = GatedPixelCNNCache

    def __init__(self, config: GatedPixelCNNConfig, shape: tuple[int, int, int], levels: int) -> None:
        super().__init__(shape, levels, config.head, config.n_classes, config.mixture_components)
        self.config = config
        colors = self.shape[0]
        for name in ("hidden_channels", "skip_channels", "output_hidden"):
            if getattr(config, name) < colors or getattr(config, name) % colors:
                raise ValueError(f"{name} must be a positive multiple of the {colors} colour channels")
        if config.n_layers < 1:
            raise ValueError("n_layers must be >= 1")
        half = max(1, config.hidden_channels // 2)
        vertical = config.vertical_channels or half
        if vertical < 1:
            raise ValueError("vertical_channels must be >= 1")
        gates = config.gate_channels or colors * -(-half // colors)  # half, rounded up to colours
        if gates < colors or gates % colors:
            raise ValueError(f"gate_channels must be a positive multiple of the {colors} colour channels")
        groups = channel_groups(config.hidden_channels, colors)
        gate_groups = channel_groups(gates, colors)
        skip_groups = channel_groups(config.skip_channels, colors)
        self.layers = nn.ModuleList(
            GatedLayer(channel_groups(colors, colors) if first else groups, gate_groups, groups,
                       skip_groups, config.first_kernel if first else config.kernel, first,
                       self.n_classes, colors if first else vertical, vertical)
            for first in [True] + [False] * (config.n_layers - 1)
        )
        out_groups = channel_groups(config.output_hidden, colors)
        param_groups = channel_groups(colors * self.params_per_channel, colors)
        self.output = nn.Sequential(
            nn.ReLU(),
            GroupMaskedConv1x1(skip_groups, out_groups),
            nn.ReLU(),
            GroupMaskedConv1x1(out_groups, param_groups),
        )

    @property
    def rows_above(self) -> int:
        """How many rows above a pixel its parameters can depend on."""
        return 1 + self.config.first_kernel // 2 + (self.config.n_layers - 1) * (self.config.kernel // 2)

    def features(self, inputs: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The summed skip outputs ``(B, skip_channels, H, W)``."""
        v = h = inputs.contiguous(memory_format=torch.channels_last)  # channels-last convolutions
        skips = None
        for layer in self.layers:
            v, h, skip = layer(v, h, cond)
            skips = skip if skips is None else skips + skip
        return skips
