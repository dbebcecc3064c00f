"""Class conditioning: a learned per-class vector added as a bias to a layer's pre-activations
(van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders": ``W * x + V h``
with ``h`` a one-hot label)."""

from __future__ import annotations

import torch
from torch import nn


class LabelBias(nn.Module):
    """``(B,)`` labels -> ``(B, channels, 1, ..., 1)`` biases; starts at zero (no effect)."""

    def __init__(self, n_classes: int, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_classes, channels)
        nn.init.zeros_(self.embedding.weight)
        self.spatial_dims = spatial_dims

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        bias = self.embedding(labels)
        return bias.view(*bias.shape, *([1] * self.spatial_dims))


def add_bias(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x if bias is None else x + bias
