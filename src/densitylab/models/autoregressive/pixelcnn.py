"""PixelCNN (van den Oord, Kalchbrenner & Kavukcuoglu, 2016, "Pixel Recurrent Neural Networks").

The image is factorised in raster order, and within a pixel over colour channels (R, G, B):

    log P(x) = sum_{i} sum_{c} log P(x_{i,c} | x_{<i}, x_{i,<c})

Each conditional is a discretized logistic mixture (PixelCNN++, Salimans et al. 2017; the
default) or a K-way softmax (the paper's, ``head="softmax"``). All conditionals come from one
pass of a stack of masked convolutions: a ``7x7`` mask-A layer (a pixel never sees itself),
residual blocks of ``1x1 -> 3x3 mask-B -> 1x1`` convolutions (the paper's PixelCNN block), and two
``1x1`` output layers producing the head's parameters per pixel (``C x K`` logits for the
softmax). The receptive field grows up and to the left but has the known "blind spot" up and to
the right; Gated PixelCNN removes it.

Deviations: the ``1x1`` convolutions are masked too (type B) so the channel order holds for colour
images; inputs are scaled to ``[-1, 1]``; the last layer starts with zero weights and a bias equal
to the log of the training data's (smoothed) marginal histogram of values, so training starts from
the best per-pixel independent model instead of from ``log2 K`` bits/dim.

Options: ``head`` (with the mixture, the colour channels stay conditioned in order through the
masks; the initial bias is the mixture's best fit to the marginal histogram); ``n_classes > 0``
makes the model class-conditional, a learned per-class bias added after the first layer and in
every residual block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from densitylab.models.autoregressive.base import RasterConvModel, sample_categorical
from densitylab.models.autoregressive.pixelcnn_cache import PixelCNNCache
from densitylab.models.base import register_model
from densitylab.nn.conditioning import LabelBias, add_bias
from densitylab.nn.masked import MaskedConv2d

__all__ = ["PixelCNN", "PixelCNNConfig", "sample_categorical"]


@dataclass
class PixelCNNConfig:
    """Defaults are the best configuration of the 8-minute CPU benchmark (docs/benchmarks.md):
    narrow and deep beats wide and shallow at a fixed budget, and the discretized logistic mixture
    head is both faster and better than the 256-way softmax on 8-bit data."""

    hidden_channels: int = 32
    n_residual_blocks: int = 5
    first_kernel: int = 7
    output_hidden: int = 32
    head: str = "logistic-mixture"  # or "softmax"
    mixture_components: int = 5
    n_classes: int = 0  # > 0: class-conditional


class ResidualBlock(nn.Module):
    """``x + 1x1(relu(3x3 mask-B(relu(1x1(relu(x))))))`` with a bottleneck of half the width."""

    def __init__(self, channels: int, n_colors: int) -> None:
        super().__init__()
        half = channels // 2
        self.reduce = MaskedConv2d(channels, half, 1, "B", n_colors)
        self.conv = MaskedConv2d(half, half, 3, "B", n_colors)
        self.expand = MaskedConv2d(half, channels, 1, "B", n_colors)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        h = self.reduce(F.relu(add_bias(x, bias)))
        h = self.conv(F.relu(h))
        return x + self.expand(F.relu(h))


@register_model("pixelcnn", "PixelCNN: masked convolutions (mask A, then mask-B residual "
                "blocks), K-way softmax or logistic mixture per pixel; exact log-likelihood")
class PixelCNN(RasterConvModel):
    Config = PixelCNNConfig
    default_lr = 1.2e-2
    cached_sampler = PixelCNNCache

    def __init__(self, config: PixelCNNConfig, shape: tuple[int, int, int], levels: int) -> None:
        super().__init__(shape, levels, config.head, config.n_classes, config.mixture_components)
        self.config = config
        colors = self.shape[0]
        if config.hidden_channels < 2 * colors or config.output_hidden < colors:
            raise ValueError(f"hidden_channels must be >= {2 * colors} and output_hidden >= {colors}")
        if config.n_residual_blocks < 0 or config.first_kernel < 1 or config.first_kernel % 2 == 0:
            raise ValueError("n_residual_blocks must be >= 0 and first_kernel a positive odd number")
        width = config.hidden_channels - config.hidden_channels % (2 * colors)
        out_hidden = config.output_hidden - config.output_hidden % colors
        self.input_conv = MaskedConv2d(colors, width, config.first_kernel, "A", colors)
        self.blocks = nn.ModuleList(ResidualBlock(width, colors) for _ in range(config.n_residual_blocks))
        self.output = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(width, out_hidden, 1, "B", colors),
            nn.ReLU(),
            MaskedConv2d(out_hidden, colors * self.params_per_channel, 1, "B", colors),
        )
        self.label_biases = nn.ModuleList(
            LabelBias(self.n_classes, width) for _ in range(config.n_residual_blocks + 1)
        ) if self.n_classes else None

    @property
    def rows_above(self) -> int:
        """How many rows above a pixel its parameters can depend on (the receptive field's height)."""
        return self.config.first_kernel // 2 + len(self.blocks)

    def features(self, inputs: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        biases = [None] * (len(self.blocks) + 1)
        if self.label_biases is not None and cond is not None:
            biases = [embed(cond) for embed in self.label_biases]
        h = add_bias(self.input_conv(inputs), biases[0])
        for block, bias in zip(self.blocks, biases[1:], strict=True):
            h = block(h, bias)
        return h
