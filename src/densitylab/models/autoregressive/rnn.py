"""Pixel RNN baseline: an LSTM (or GRU) over the raster-scan sequence of sub-pixels.

The simple sequence-RNN baseline of the course. The image ``(C, H, W)`` is read as one sequence of
``D = H * W * C`` sub-pixels in raster order with the colour channels innermost (the rank of
``(c, i, j)`` is ``(i * W + j) * C + c``), the pixel-sequence view of van den Oord, Kalchbrenner &
Kavukcuoglu (2016, "Pixel Recurrent Neural Networks"), and a recurrent network (the LSTM of
Hochreiter & Schmidhuber 1997, "Long Short-Term Memory", or a GRU) reads it one value at a time:

    log P(x) = sum_t log softmax(W h_t + b_{c(t)})[x_t],
    h_t = RNN(h_{t-1}, A [x_{t-1}, coords_t] + e_y),   x_{-1} = 0,

where ``x_{t-1}`` is the previous sub-pixel scaled to ``[-1, 1]``, ``c(t)`` the colour channel of
sub-pixel ``t``, ``A`` a linear input projection to ``hidden_size`` features and ``e_y`` a learned
vector of the label ``y`` (zero-initialised, only with ``n_classes > 0``). ``h_t`` has seen exactly
the values before ``t``, so all ``D`` conditionals come from one pass of the RNN over the shifted
sequence. (``A`` composes linearly with the first layer's input weights, so it adds no expressive
power.)

This is NOT the paper's Row LSTM or Diagonal BiLSTM (which run 2D recurrences over rows or
diagonals with convolutional state-to-state maps); it is the plain 1D sequence model those improve
on, with a memory of the image only through its hidden state.

Options: ``coords=True`` appends the position of the sub-pixel being predicted, ``t``, to every
input: its row and column scaled to ``[-1, 1]`` and, for ``C > 1``, its channel index scaled the
same way. The course notes say an RNN over pixels "improves drastically if you also provide it
with metadata on pixel position". ``cell="gru"`` swaps the LSTM for a GRU.

Output bias: the last layer has no bias of its own; a ``(C, K)`` table, indexed by the channel of
each sub-pixel, is added to its logits. :meth:`initialize_from_data` (the shared one) zeroes the
output weights and sets the table to the log of each channel's smoothed histogram, so training
starts from the best per-channel independent model rather than from ``log2 K`` bits/dim.

Sampling steps the same recurrent module one sub-pixel at a time, carrying its state (``D`` cheap
steps instead of ``D`` passes over the whole sequence), and draws the same values from the same
uniform numbers as the reference sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from densitylab.models.autoregressive.base import AutoregressiveImageModel
from densitylab.models.autoregressive.rnn_cache import RecurrentCache
from densitylab.models.base import register_model

__all__ = ["PixelRNN", "PixelRNNConfig"]

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}

RecurrentState = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None


@dataclass
class PixelRNNConfig:
    """Defaults sized for a 2-core CPU on 28x28 8-bit images: one LSTM layer of 64 units. The D =
    784 steps run one after the other, so a pass costs about ``D`` small matrix products per layer
    whatever the batch; the K = 256 softmax over every sub-pixel costs about as much again."""

    cell: str = "lstm"  # or "gru"
    hidden_size: int = 64
    n_layers: int = 1
    coords: bool = False  # append the (row, column[, channel]) of the predicted sub-pixel
    n_classes: int = 0  # > 0: class-conditional


def _scaled_index(index: torch.Tensor, size: int) -> torch.Tensor:
    """``0..size-1`` -> ``[-1, 1]`` (0 when ``size == 1``)."""
    if size == 1:
        return torch.zeros(index.shape, dtype=torch.float64)
    return index.double() * (2.0 / (size - 1)) - 1.0


def sequence_coordinates(shape: tuple[int, int, int]) -> torch.Tensor:
    """``(D, 2 or 3)``: row, column (and channel when ``C > 1``) of each sub-pixel in raster order
    with channels innermost, each scaled to ``[-1, 1]``."""
    channels, height, width = shape
    i, j, c = torch.meshgrid(torch.arange(height), torch.arange(width), torch.arange(channels),
                             indexing="ij")
    columns = [_scaled_index(i, height), _scaled_index(j, width)]
    if channels > 1:
        columns.append(_scaled_index(c, channels))
    return torch.stack([col.reshape(-1) for col in columns], dim=1).float()


@register_model("rnn", "Pixel RNN baseline: an LSTM/GRU over the raster sequence of sub-pixels "
                "(optionally given their coordinates), K-way softmax per step; exact log-likelihood")
class PixelRNN(AutoregressiveImageModel):
    Config = PixelRNNConfig
    default_lr = 2e-2  # Adam

    def __init__(self, config: PixelRNNConfig, shape: tuple[int, int, int], levels: int) -> None:
        super().__init__(shape, levels, "softmax", config.n_classes)
        self.config = config
        if config.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {config.cell!r}")
        if config.hidden_size < 1 or config.n_layers < 1:
            raise ValueError("hidden_size and n_layers must be >= 1")
        channels = self.shape[0]
        coords = sequence_coordinates(self.shape)
        self.register_buffer("coords", coords if config.coords else coords[:, :0], persistent=False)
        self.register_buffer("channel_index", torch.arange(self.dim) % channels, persistent=False)
        self.input_proj = nn.Linear(1 + self.coords.shape[1], config.hidden_size)
        self.label_embedding = nn.Embedding(self.n_classes, config.hidden_size) if self.n_classes else None
        if self.label_embedding is not None:
            nn.init.zeros_(self.label_embedding.weight)
        self.rnn = CELLS[config.cell](config.hidden_size, config.hidden_size, config.n_layers,
                                      batch_first=True)
        self.output = nn.Linear(config.hidden_size, self.params_per_channel, bias=False)
        self.channel_bias = nn.Parameter(torch.zeros(channels, self.params_per_channel))

    cached_sampler = RecurrentCache  # the hidden state carried from step to step

    def output_weight(self) -> torch.Tensor:
        return self.output.weight

    def output_bias(self) -> torch.Tensor:
        return self.channel_bias

    # ----- one pass over the whole sequence --------------------------------------------------------
    def step_inputs(self, previous: torch.Tensor, steps: slice, cond: torch.Tensor | None) -> torch.Tensor:
        """``previous (B, T)`` scaled values before each step -> RNN inputs ``(B, T, hidden)``."""
        coords = self.coords[steps].to(previous.dtype).expand(previous.shape[0], -1, -1)
        h = self.input_proj(torch.cat([previous.unsqueeze(-1), coords], dim=-1))
        if self.label_embedding is not None and cond is not None:
            h = h + self.label_embedding(cond).unsqueeze(1)
        return h

    def logits(self, hidden: torch.Tensor, steps: slice) -> torch.Tensor:
        """``(B, T, hidden)`` -> ``(B, T, K)`` logits of the sub-pixels ``steps``."""
        return self.output(hidden) + self.channel_bias[self.channel_index[steps]]

    def params_from_input(self, inputs: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        b, channels, height, width = inputs.shape
        sequence = inputs.permute(0, 2, 3, 1).reshape(b, -1)  # raster order, channels innermost
        previous = torch.cat([sequence.new_zeros(b, 1), sequence[:, :-1]], dim=1)
        everything = slice(None)
        hidden, _ = self.rnn(self.step_inputs(previous, everything, cond))
        logits = self.logits(hidden, everything)  # (B, D, K)
        return logits.view(b, height, width, channels, -1).permute(0, 3, 4, 1, 2)
