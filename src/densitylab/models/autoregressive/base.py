"""What every autoregressive image model shares: an order over sub-pixels, an output head, labels.

A model of this family factorises ``P(x) = prod_t P(x_t | x_<t, y)`` over the sub-pixels
``x_t`` (a colour channel of a pixel) in the order given by :meth:`order_rank`, and computes all
conditionals of an image in one pass: :meth:`params_from_input` maps scaled inputs
``(B, C, H, W)`` in ``[-1, 1]`` to distribution parameters ``(B, C, P, H, W)`` such that the
parameters of sub-pixel ``t`` depend only on the inputs ranked before ``t`` (the tests check this
with the autograd Jacobian). The head (:mod:`densitylab.nn.heads`) turns parameters into
log-probabilities. Labels ``y`` (``LongTensor[B]``), when the model has ``n_classes > 0``, enter
as learned biases.

The generic :meth:`sample` runs the whole network once per sub-pixel; models override it with
something faster that draws the same values from the same uniform numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from densitylab.errors import DensitylabError
from densitylab.models.base import DensityModel
from densitylab.nn.heads import make_head


class AutoregressiveImageModel(DensityModel):
    family = "autoregressive"

    def __init__(self, shape: tuple[int, int, int], levels: int, head: str = "softmax",
                 n_classes: int = 0, mixture_components: int = 5) -> None:
        super().__init__(shape, levels)
        if n_classes < 0:
            raise ValueError(f"n_classes must be >= 0, got {n_classes}")
        self.n_classes = int(n_classes)
        self.head = make_head(head, levels, mixture_components)

    @property
    def params_per_channel(self) -> int:
        return self.head.params_per_channel

    # ----- to implement ------------------------------------------------------------------------
    def params_from_input(self, inputs: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled float images ``(B, C, H, W)`` -> parameters ``(B, C, P, H, W)``."""
        raise NotImplementedError

    def output_bias(self) -> torch.Tensor:
        """The bias of the last layer, viewed as ``(C, P)`` (set by :meth:`initialize_from_data`)."""
        raise NotImplementedError

    def output_weight(self) -> torch.Tensor:
        raise NotImplementedError

    # ----- shared --------------------------------------------------------------------------------
    def order_rank(self) -> torch.Tensor:
        """Rank of each sub-pixel ``(C, H, W)`` in the factorisation order (default: raster over
        pixels, then R, G, B within a pixel)."""
        c, h, w = self.shape
        return torch.arange(c * h * w).view(h, w, c).permute(2, 0, 1)

    def scale_input(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.output_weight().dtype
        return x.to(dtype) * (2.0 / max(self.levels - 1, 1)) - 1.0

    def check_cond(self, cond: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if self.n_classes == 0:
            if cond is not None:
                raise DensitylabError("this model is not class-conditional; train it with "
                                      "--conditional to use labels")
            return None
        if cond is None:
            raise DensitylabError(f"this model is class-conditional: give a label in "
                                  f"0..{self.n_classes - 1} (--label)")
        cond = torch.as_tensor(cond, device=self.device).long().reshape(-1)
        if cond.numel() == 1 and batch != 1:
            cond = cond.expand(batch)
        if cond.numel() != batch:
            raise DensitylabError(f"got {cond.numel()} labels for {batch} images")
        if cond.numel() and (int(cond.min()) < 0 or int(cond.max()) >= self.n_classes):
            raise DensitylabError(f"labels must lie in 0..{self.n_classes - 1}")
        return cond

    @torch.no_grad()
    def initialize_from_data(self, x: torch.Tensor) -> None:
        """Zero last-layer weights; bias = the head's best per-pixel independent fit to ``x``."""
        self.output_weight().zero_()
        bias = self.output_bias()
        bias.copy_(self.head.initial_bias(x, self.shape[0]).to(bias))

    def log_prob(self, x, cond=None, generator=None):
        self.check_input(x)
        cond = self.check_cond(cond, len(x))
        return self.head.log_prob(self.params_from_input(self.scale_input(x), cond), x)

    def draw(self, params: torch.Tensor, temperature: float,
             generator: torch.Generator | None) -> torch.Tensor:
        """One level per row of ``params (N, P)``, by inverting the CDF at ``u ~ U[0,1)``."""
        return sample_categorical(self.head.level_logits(params), temperature, generator)

    @torch.no_grad()
    def sample(self, n, cond=None, temperature=1.0, generator=None):
        """Reference sampler: the whole network once per sub-pixel, in order."""
        cond = self.check_cond(cond, n)
        x = torch.zeros(n, *self.shape, dtype=torch.long, device=self.device)
        positions = torch.nonzero(torch.ones(self.shape))[self.order_rank().flatten().argsort()]
        for c, i, j in positions.tolist():
            params = self.params_from_input(self.scale_input(x), cond)[:, c, :, i, j]
            x[:, c, i, j] = self.draw(params, temperature, generator)
        return x


class RasterConvModel(AutoregressiveImageModel):
    """A convolutional model in raster order: ``features(inputs, cond)`` from a body whose output
    at row ``i`` depends on rows ``i - rows_above .. i`` only, then a ``1x1`` output stack
    ``self.output`` (an ``nn.Sequential`` ending in the parameter layer). Shared by PixelCNN and
    Gated PixelCNN, with their band sampler."""

    output: nn.Sequential

    @property
    def rows_above(self) -> int:
        raise NotImplementedError

    def features(self, inputs: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def output_weight(self) -> torch.Tensor:
        return self.output[-1].weight

    def output_bias(self) -> torch.Tensor:
        return self.output[-1].bias.view(self.shape[0], self.params_per_channel)

    def output_params(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F, H, W)`` features -> ``(B, C, P, H, W)`` parameters."""
        out = self.output(features)
        b, _, height, width = out.shape
        return out.view(b, self.shape[0], self.params_per_channel, height, width)

    def params_from_input(self, inputs: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.output_params(self.features(inputs, cond))

    @torch.no_grad()
    def sample(self, n, cond=None, temperature=1.0, generator=None):
        """Raster-order sampling: one pass per pixel and channel over the band of rows the next
        pixel depends on.

        The body never looks below the current row nor more than ``rows_above`` rows up, so it runs
        on that band (padding is added on top only, so the parameters are the same), and the
        output layers run at ``(i, j)`` alone. Each value is drawn by inverting the CDF at a
        uniform number from ``generator``, so the same seed gives the same images as the
        reference sampler.
        """
        cond = self.check_cond(cond, n)
        channels, height, width = self.shape
        x = torch.zeros(n, channels, height, width, dtype=torch.long, device=self.device)
        for i in range(height):
            top = max(0, i - self.rows_above)
            for j in range(width):
                for c in range(channels):
                    band = self.scale_input(x[:, :, top : i + 1])
                    features = self.features(band, cond)[:, :, -1:, j : j + 1]
                    params = self.output_params(features)[:, c, :, 0, 0]
                    x[:, c, i, j] = self.draw(params, temperature, generator)
        return x


def sample_categorical(
    logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one index per row of ``logits / temperature`` by inverting the CDF at ``u ~ U[0,1)``
    (``u`` comes from ``generator`` on the CPU, so a seed fixes the draws on every device)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=-1)
    cdf = probs.cumsum(-1)
    u = torch.rand(logits.shape[:-1] + (1,), generator=generator).to(logits.device)
    u = u * cdf[..., -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=logits.shape[-1] - 1)
