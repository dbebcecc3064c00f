"""PixelCNN (van den Oord, Kalchbrenner & Kavukcuoglu, 2016, "Pixel Recurrent Neural Networks").

The image is factorised in raster order, and within a pixel over colour channels (R, G, B):

    log P(x) = sum_{i} sum_{c} log P(x_{i,c} | x_{<i}, x_{i,<c})

Each conditional is a K-way softmax. All conditionals come from one pass of a stack of masked
convolutions: a ``7x7`` mask-A layer (a pixel never sees itself), residual blocks of
``1x1 -> 3x3 mask-B -> 1x1`` convolutions (the paper's PixelCNN block), and two ``1x1`` output
layers producing ``C x K`` logits per pixel. The receptive field grows up and to the left but has
the known "blind spot" up and to the right; Gated PixelCNN removes it.

Deviations: the ``1x1`` convolutions are masked too (type B) so the channel order holds for colour
images; inputs are scaled to ``[-1, 1]``; the last layer starts with zero weights and a bias equal
to the log of the training data's (smoothed) marginal histogram of values, so training starts from
the best per-pixel independent model instead of from ``log2 K`` bits/dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from densitylab.models.base import DensityModel, register_model
from densitylab.nn.masked import MaskedConv2d


@dataclass
class PixelCNNConfig:
    """Defaults chosen by the 8-minute CPU benchmark: narrow and deep beats wide and shallow when
    the budget is fixed (see README)."""

    hidden_channels: int = 32
    n_residual_blocks: int = 5
    first_kernel: int = 7
    output_hidden: int = 32


class ResidualBlock(nn.Module):
    """``x + 1x1(relu(3x3 mask-B(relu(1x1(relu(x))))))`` with a bottleneck of half the width."""

    def __init__(self, channels: int, n_colors: int) -> None:
        super().__init__()
        half = channels // 2
        self.reduce = MaskedConv2d(channels, half, 1, "B", n_colors)
        self.conv = MaskedConv2d(half, half, 3, "B", n_colors)
        self.expand = MaskedConv2d(half, channels, 1, "B", n_colors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.reduce(F.relu(x))
        h = self.conv(F.relu(h))
        return x + self.expand(F.relu(h))


@register_model("pixelcnn", "PixelCNN: masked convolutions (mask A, then mask-B residual "
                "blocks), K-way softmax per pixel; exact log-likelihood")
class PixelCNN(DensityModel):
    family = "autoregressive"
    Config = PixelCNNConfig
    default_lr = 1.2e-2

    def __init__(self, config: PixelCNNConfig, shape: tuple[int, int, int], levels: int) -> None:
        super().__init__(shape, levels)
        self.config = config
        colors = self.shape[0]
        if config.hidden_channels < 2 * colors or config.output_hidden < colors:
            raise ValueError(f"hidden_channels must be >= {2 * colors} and output_hidden >= {colors}")
        if config.n_residual_blocks < 0 or config.first_kernel < 1 or config.first_kernel % 2 == 0:
            raise ValueError("n_residual_blocks must be >= 0 and first_kernel a positive odd number")
        width = config.hidden_channels - config.hidden_channels % (2 * colors)
        out_hidden = config.output_hidden - config.output_hidden % colors
        self.input_conv = MaskedConv2d(colors, width, config.first_kernel, "A", colors)
        self.blocks = nn.Sequential(
            *(ResidualBlock(width, colors) for _ in range(config.n_residual_blocks))
        )
        self.output = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(width, out_hidden, 1, "B", colors),
            nn.ReLU(),
            MaskedConv2d(out_hidden, colors * levels, 1, "B", colors),
        )

    @torch.no_grad()
    def initialize_from_data(self, x: torch.Tensor) -> None:
        """Zero last-layer weights; bias = log of each channel's smoothed value histogram."""
        last = self.output[-1]
        last.weight.zero_()
        channels = self.shape[0]
        counts = torch.stack([
            torch.bincount(x[:, c].reshape(-1).long().cpu(), minlength=self.levels).double()
            for c in range(channels)
        ])
        log_freq = torch.log((counts + 1.0) / (counts + 1.0).sum(1, keepdim=True))
        last.bias.copy_(log_freq.reshape(-1).to(last.bias))

    def scale_input(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.input_conv.weight.dtype
        return x.to(dtype) * (2.0 / max(self.levels - 1, 1)) - 1.0

    @property
    def rows_above(self) -> int:
        """How many rows above a pixel its logits can depend on (the receptive field's height)."""
        return self.config.first_kernel // 2 + len(self.blocks)

    def logits_from_input(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C, K, H, W)`` from scaled float inputs (used by the Jacobian tests)."""
        return self._head(self.blocks(self.input_conv(inputs)))

    def _head(self, features: torch.Tensor) -> torch.Tensor:
        out = self.output(features)
        b, _, height, width = out.shape
        return out.view(b, self.shape[0], self.levels, height, width)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_input(self.scale_input(x))

    def log_prob(self, x, cond=None, generator=None):
        self.check_input(x)
        return categorical_log_prob(self.logits(x), x)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        cond: torch.Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Raster-order sampling: one forward pass per pixel and channel.

        Each pass computes only what pixel ``(i, j)`` depends on: the network never looks below
        the current row nor more than ``rows_above`` rows up, so the body runs on that band of
        rows (padding is added on top only, so the logits are the same), and the output layers
        run at ``(i, j)`` alone. Each value is drawn by inverting the CDF at a uniform number from
        ``generator``, so the same seed gives the same images. (Caching activations across
        steps, which would avoid recomputing the band, is not done here.)
        """
        channels, height, width = self.shape
        x = torch.zeros(n, channels, height, width, dtype=torch.long, device=self.device)
        for i in range(height):
            top = max(0, i - self.rows_above)
            for j in range(width):
                for c in range(channels):
                    band = self.scale_input(x[:, :, top : i + 1])
                    features = self.blocks(self.input_conv(band))[:, :, -1:, j : j + 1]
                    logits = self._head(features)[:, c, :, 0, 0].float()
                    x[:, c, i, j] = sample_categorical(logits, temperature, generator)
        return x


def categorical_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum log softmax(logits)[x]`` over all positions: logits ``(B, C, K, H, W)`` -> ``(B,)``.

    The softmax runs over a contiguous last axis (``(B, H, W, C, K)``), which is several times
    faster on a CPU than reducing over the strided ``K`` axis.
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    log_probs = logits.permute(0, 3, 4, 1, 2).log_softmax(-1)
    picked = log_probs.gather(-1, x.long().permute(0, 2, 3, 1).unsqueeze(-1))
    return picked.flatten(1).sum(1)


def sample_categorical(
    logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one index per row of ``logits / temperature`` by inverting the CDF at ``u ~ U[0,1)``."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    cdf = probs.cumsum(-1)
    u = torch.rand(logits.shape[:-1] + (1,), generator=generator).to(logits.device)
    u = u * cdf[..., -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=logits.shape[-1] - 1)
