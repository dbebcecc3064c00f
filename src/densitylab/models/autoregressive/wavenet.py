"""WaveNet on images (van den Oord, Dieleman, Zen, Simonyan, Vinyals, Graves, Kalchbrenner,
Senior & Kavukcuoglu, 2016, "WaveNet: A Generative Model for Raw Audio").

The image is read as a sequence of ``D = H * W * C`` sub-pixels in raster order (colour channels
innermost) and modelled like audio: ``log P(x) = sum_t log P(x_t | x_<t, y)``, each conditional a
K-way softmax. The network sees the sequence shifted right by one step (``x_{t-1}`` at step
``t``, zero at ``t = 0``), so a causal network gives conditionals that never see ``x_t``:

    h_0 = W_in * [x_{t-1}, pos_t]
    for each layer l with dilation d_l (1, 2, 4, ..., 2^(L-1), repeated in blocks):
        a, b = split(W_l *_{d_l} h_{l-1} + e_y)      (a causal kernel-2 convolution, dilated)
        u    = tanh(a) * sigmoid(b)
        h_l  = h_{l-1} + R_l u                        (residual)
        s   += S_l u                                  (skip)
    logits_t = W_2 ReLU(W_1 ReLU(s))

``pos_t`` (``coords=True``) is the row and column of the sub-pixel being predicted, scaled to
``[-1, 1]`` (and its colour channel when ``C > 1``). The course notes point out that WaveNet on
images "needs the pixel coordinates as metadata to work": a 1D causal network cannot otherwise
tell where a row ends. ``e_y`` is a learned per-class bias (class-conditional models).

The receptive field is ``1 + blocks * (2^L - 1)`` steps; the default, 256 steps (9 rows of a
28x28 image), is smaller than the image, so beyond the first 256 steps the network cannot read
its position off the zero padding at the start of the sequence — that is when coordinates matter.
(With a receptive field covering the whole image, e.g. ``layers_per_block=10``, the padding gives
the position away.)

Sampling is incremental by default (:mod:`densitylab.models.autoregressive.wavenet_cache`, the
"fast WaveNet" algorithm of Paine et al. 2016): every layer keeps the history of its inputs, and
each new step costs one kernel-2 product per layer instead of a pass over the whole sequence; it
draws the same values as the naive sampler for the same random numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from densitylab.models.autoregressive.base import AutoregressiveImageModel
from densitylab.models.autoregressive.wavenet_cache import WaveNetCache
from densitylab.models.base import register_model
from densitylab.nn.causal import CausalConv1d
from densitylab.nn.conditioning import LabelBias


@dataclass
class WaveNetConfig:
    residual_channels: int = 32
    skip_channels: int = 32
    output_hidden: int = 32
    layers_per_block: int = 8  # dilations 1 .. 2^(L-1): a receptive field of 256 steps
    n_blocks: int = 1
    coords: bool = False
    n_classes: int = 0


class WaveNetLayer(nn.Module):
    def __init__(self, channels: int, skip_channels: int, dilation: int, n_classes: int) -> None:
        super().__init__()
        self.conv = CausalConv1d(channels, 2 * channels, 2, dilation)
        self.residual = nn.Conv1d(channels, channels, 1)
        self.skip = nn.Conv1d(channels, skip_channels, 1)
        self.label = LabelBias(n_classes, 2 * channels, spatial_dims=1) if n_classes else None

    def gated(self, pre: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if self.label is not None and cond is not None:
            bias = self.label(cond)
            pre = pre + (bias if pre.dim() == 3 else bias[..., 0])  # a sequence or one step
        a, b = pre.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None):
        u = self.gated(self.conv(h), cond)
        return h + self.residual(u), self.skip(u)


@register_model("wavenet", "WaveNet on images: the raster sequence of sub-pixels through dilated "
                "causal convolutions with gates, residual and skip connections; coords=true adds "
                "each position's (row, column)")
class WaveNet(AutoregressiveImageModel):
    Config = WaveNetConfig
    default_lr = 5e-3
    cached_sampler = WaveNetCache

    def __init__(self, config: WaveNetConfig, shape: tuple[int, int, int], levels: int) -> None:
        super().__init__(shape, levels, "softmax", config.n_classes)
        self.config = config
        if min(config.residual_channels, config.skip_channels, config.output_hidden,
               config.layers_per_block, config.n_blocks) < 1:
            raise ValueError("channel counts, layers_per_block and n_blocks must be >= 1")
        channels, height, width = self.shape
        self.n_position_features = (2 + (channels > 1)) if config.coords else 0
        self.input_conv = nn.Conv1d(1 + self.n_position_features, config.residual_channels, 1)
        self.layers = nn.ModuleList(
            WaveNetLayer(config.residual_channels, config.skip_channels, 2**i, self.n_classes)
            for _ in range(config.n_blocks) for i in range(config.layers_per_block)
        )
        self.output = nn.Sequential(
            nn.ReLU(), nn.Conv1d(config.skip_channels, config.output_hidden, 1),
            nn.ReLU(), nn.Conv1d(config.output_hidden, levels, 1),
        )
        self.register_buffer("positions", self._position_features(), persistent=False)

    def _position_features(self) -> torch.Tensor:
        """``(F, D)``: row, column (and channel) of every step, scaled to ``[-1, 1]``."""
        channels, height, width = self.shape
        rows, cols, chans = torch.meshgrid(
            torch.arange(height), torch.arange(width), torch.arange(channels), indexing="ij"
        )
        scale = lambda v, n: v.flatten().float() * (2.0 / max(n - 1, 1)) - 1.0  # noqa: E731
        features = [scale(rows, height), scale(cols, width)]
        if channels > 1:
            features.append(scale(chans, channels))
        return torch.stack(features)[: self.n_position_features]

    @property
    def receptive_field(self) -> int:
        return 1 + self.config.n_blocks * (2**self.config.layers_per_block - 1)

    def output_weight(self) -> torch.Tensor:
        return self.output[-1].weight

    def output_bias(self) -> torch.Tensor:
        return self.output[-1].bias.view(1, self.levels)

    @torch.no_grad()
    def initialize_from_data(self, x: torch.Tensor) -> None:
        """Zero last weights; bias = log of the smoothed histogram of all sub-pixel values."""
        self.output_weight().zero_()
        pooled = x.reshape(-1, 1, 1, 1)  # one channel holding every value
        self.output[-1].bias.copy_(self.head.initial_bias(pooled, 1)[0].to(self.output[-1].bias))

    def sequence_input(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, 1 + F, D)``: the shifted sequence and the position features."""
        seq = inputs.permute(0, 2, 3, 1).reshape(len(inputs), 1, -1)
        seq = F.pad(seq, (1, -1))  # x_{t-1} at step t
        if self.n_position_features:
            pos = self.positions.to(seq.dtype).expand(len(inputs), -1, -1)
            seq = torch.cat([seq, pos], dim=1)
        return seq

    def params_from_input(self, inputs: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.input_conv(self.sequence_input(inputs))
        skips = 0.0
        for layer in self.layers:
            h, skip = layer(h, cond)
            skips = skips + skip
        logits = self.output(skips)  # (B, K, D)
        channels, height, width = self.shape
        return logits.view(len(inputs), self.levels, height, width, channels).permute(0, 4, 1, 2, 3)
