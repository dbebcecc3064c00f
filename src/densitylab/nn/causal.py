"""Causal dilated 1D convolutions (WaveNet): the output at step ``t`` reads inputs ``t - d*(k-1)``
... ``t`` only, by padding ``d * (k - 1)`` zeros on the left."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalConv1d(nn.Conv1d):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 2, dilation: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.left_pad = dilation * (kernel_size - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left_pad, 0)))

    def step(self, history: torch.Tensor, t: int) -> torch.Tensor:
        """The output at step ``t`` alone from ``history (B, C_in, T)`` of this layer's inputs
        (steps before 0 read as zeros): one matrix product per tap, for incremental sampling."""
        out = self.bias.expand(history.shape[0], -1) if self.bias is not None else 0.0
        k = self.kernel_size[0]
        for tap in range(k):
            source = t - self.dilation[0] * (k - 1 - tap)
            if source >= 0:
                out = out + history[:, :, source] @ self.weight[:, :, tap].T
        return out
