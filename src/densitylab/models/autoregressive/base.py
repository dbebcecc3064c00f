"""What every autoregressive image model shares: an order over sub-pixels, an output head, labels.

A model of this family factorises ``P(x) = prod_t P(x_t | x_<t, y)`` over the sub-pixels
``x_t`` (a colour channel of a pixel) in the order given by :meth:`order_rank`, and computes all
conditionals of an image in one pass: :meth:`params_from_input` maps scaled inputs
``(B, C, H, W)`` in ``[-1, 1]`` to distribution parameters ``(B, C, P, H, W)`` such that the
parameters of sub-pixel ``t`` depend only on the inputs ranked before ``t`` (the tests check this
with the autograd Jacobian). The head (:mod:`densitylab.nn.heads`) turns parameters into
log-probabilities. Labels ``y`` (``LongTensor[B]``), when the model has ``n_classes > 0``, enter
as learned biases.

:meth:`sample` draws the sub-pixels in order (:mod:`densitylab.sampling`): ``method="naive"`` runs
the whole network once per sub-pixel; ``method="cached"``, the default where a model names a
``cached_sampler``, reuses the activations of earlier steps and draws the same values from the
same uniform numbers.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from densitylab.errors import DensitylabError
from densitylab.models.base import DensityModel, sample_count
from densitylab.nn.heads import make_head
from densitylab.sampling import METHODS, FullPass, StepState, sample_in_order
from densitylab.sampling.loop import raster_rank


class AutoregressiveImageModel(DensityModel):
    family = "autoregressive"
    cached_sampler: ClassVar[type[StepState] | None] = None

    def __init__(self, shape: tuple[int, int, int], levels: int, head: str = "softmax",
                 n_classes: int = 0, mixture_components: int = 5) -> None:
        super().__init__(shape, levels)
        if n_classes < 0:
            raise ValueError(f"n_classes must be >= 0, got {n_classes}")
        self.n_classes = int(n_classes)
        self.head = make_head(head, levels, mixture_components)

    @property
    def conditional(self) -> bool:
        return self.n_classes > 0

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
        return raster_rank(self.shape)

    def scale_input(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.output_weight().dtype
        return x.to(dtype) * (2.0 / max(self.levels - 1, 1)) - 1.0

    def check_cond(self, cond: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if self.n_classes == 0:
            self.refuse_cond(cond)
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

    def step_state(self, method: str | None) -> type[StepState]:
        """How :meth:`sample` computes each step: ``"cached"`` (``None``: cached where the model
        has a cached sampler) or ``"naive"``."""
        if method is None:
            method = "cached" if self.cached_sampler is not None else "naive"
        if method not in METHODS:
            raise DensitylabError(f"unknown sampling method {method!r}; use one of {', '.join(METHODS)}")
        if method == "naive":
            return FullPass
        if self.cached_sampler is None:
            raise DensitylabError(f"model {self.registry_name!r} has no cached sampler; use --method naive")
        return self.cached_sampler

    @torch.no_grad()
    def sample(self, sample_shape=(), cond=None, temperature=1.0, generator=None, method=None,
               progress=False):
        """Images of shape ``(*sample_shape, C, H, W)`` drawn sub-pixel by sub-pixel; ``method``
        as in :meth:`step_state`, ``progress`` shows a bar over the sub-pixels."""
        n, leading = sample_count(sample_shape)
        cond = self.check_cond(cond, n)
        images = sample_in_order(self, n, cond, self.step_state(method), temperature, generator, progress)
        return images.reshape(*leading, *self.shape)


class RasterConvModel(AutoregressiveImageModel):
    """A convolutional model in raster order: ``features(inputs, cond)`` from a body whose output
    at row ``i`` depends on rows ``i - rows_above .. i`` only, then a ``1x1`` output stack
    ``self.output`` (an ``nn.Sequential`` ending in the parameter layer). Shared by PixelCNN and
    Gated PixelCNN."""

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
