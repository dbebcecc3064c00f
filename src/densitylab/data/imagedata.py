"""The dataset type every source returns: a fixed train/test split as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from densitylab.data.transforms import requantize
from densitylab.errors import DensitylabError


@dataclass
class ImageData:
    """A train/test split of integer images in ``{0..levels-1}``."""

    name: str
    train: torch.Tensor
    test: torch.Tensor
    levels: int
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    train_context: torch.Tensor | None = None  # (N, k) floats: a continuous context per example
    test_context: torch.Tensor | None = None
    standardize: bool = False  # fit the flow's standardisation to the train split (tables)

    @property
    def context_features(self) -> int:
        return 0 if self.train_context is None else int(self.train_context.shape[1])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def continuous(self) -> bool:
        """Real-valued data (the toys), scored in nats/dim instead of bits/dim."""
        return self.levels == 0

    def quantized(self, n_bits: int | None) -> ImageData:
        """The same images with ``2**n_bits`` levels (``None`` keeps the native levels)."""
        if n_bits is None:
            return self
        if self.continuous:
            raise DensitylabError(f"{self.name} is continuous data; --n-bits applies to images only")
        if not 1 <= n_bits <= 8:
            raise DensitylabError(f"--n-bits must be between 1 and 8, got {n_bits}")
        target = 2**n_bits
        if target > self.levels:
            raise DensitylabError(
                f"{self.name} has {self.levels} levels; choose --n-bits with 2**n <= {self.levels}"
            )
        return ImageData(
            self.name, requantize(self.train, self.levels, target),
            requantize(self.test, self.levels, target), target,
            self.train_labels, self.test_labels,
        )
