"""MADE (Germain, Gregor, Murray & Larochelle, 2015, "MADE: Masked Autoencoder for Distribution
Estimation").

An MLP over the flattened image whose weights are masked so that output ``d`` depends only on the
inputs ranked before ``d``:

    log P(x) = sum_t log P(x_t | x_<t, y),    t over the D = C*H*W sub-pixels in rank order.

Degrees and masks are MADE's (:mod:`densitylab.nn.made`): sub-pixel ``d`` has degree
``rank(d) + 1``, hidden degrees are uniform in ``[min of the layer below, D - 1]``. Ranks keep the
colour channels innermost, ``rank(c, i, j) = pixel_rank(i, j) * C + c``, with ``pixel_rank`` one
of ``ORDERINGS``: ``raster`` (``i * W + j``), ``columns`` (``j * H + i``), ``even-odd`` (even rows,
then odd rows, each in raster order), ``top-bottom-middle`` (the rows split into three bands as by
``torch.tensor_split(rows, 3)``, taken top, bottom, middle) or ``random`` (a permutation drawn from
``order_seed``).

Each conditional is a K-way softmax whose logits are factored through ``F = output_rank`` masked
features per sub-pixel, ``logits_{d,k} = sum_f g_{d,f} U_{k,f} + b_{d,k}`` with ``g`` the masked
output layer, ``U (K, F)`` shared and ``b (D, K)`` per sub-pixel (when ``K <= F`` the masked layer
gives the logits directly, plus ``b``).

Connectivity-agnostic training (section 4.2): ``n_masks`` mask sets share the weights (with
``resample_order``, each set but the first has its own random ordering). Training uses one set
per call, in turn; in eval mode the model is the mixture ``P(x) = (1/M) sum_m P_m(x)``, and
sampling draws a set per image, then the image in that set's order. Class conditioning adds a
learned per-class vector, zero at the start, to the first hidden layer's pre-activations.

Deviations: inputs are scaled to ``[-1, 1]``; no direct input-to-output connections; the output
layer starts with zero weights and ``b`` equal to the log of each colour channel's smoothed
histogram in the training data, so training starts from the best per-pixel independent model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from densitylab.errors import DensitylabError
from densitylab.models.autoregressive.base import AutoregressiveImageModel
from densitylab.models.autoregressive.made_cache import MADECache, MADEPass
from densitylab.models.base import register_model, sample_count
from densitylab.nn.conditioning import LabelBias
from densitylab.nn.made import MaskedLinear, hidden_degrees, made_masks
from densitylab.nn.made_steps import MaskedMLPSteps
from densitylab.sampling import METHODS

__all__ = ["MADE", "MADEConfig", "ORDERINGS", "pixel_ranks"]

ORDERINGS = ("raster", "random", "columns", "even-odd", "top-bottom-middle")


@dataclass
class MADEConfig:
    """One hidden layer of 256 units and 8 output features per sub-pixel by default."""

    hidden_sizes: list[int] = field(default_factory=lambda: [256])
    output_rank: int = 8  # F: features per sub-pixel behind the factored K-way logits
    ordering: str = "raster"  # one of ORDERINGS
    n_masks: int = 1  # > 1: connectivity-agnostic training, an exact mixture at evaluation
    resample_order: bool = False  # with n_masks > 1: a random pixel order for each set but the first
    n_classes: int = 0  # > 0: class-conditional
    order_seed: int = 0  # seeds the random ordering(s) and the hidden degrees


def pixel_ranks(ordering: str, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """``(H, W)``: the rank of each pixel under ``ordering`` (see the module docstring)."""
    if ordering == "random":
        return torch.randperm(height * width, generator=generator).view(height, width)
    if ordering == "columns":
        return torch.arange(height * width).view(width, height).t().contiguous()
    rows = torch.arange(height)
    if ordering == "even-odd":
        rows = torch.cat([rows[0::2], rows[1::2]])
    elif ordering == "top-bottom-middle":
        top, middle, bottom = rows.tensor_split(3)
        rows = torch.cat([top, bottom, middle])
    elif ordering != "raster":
        raise ValueError(f"ordering must be one of {', '.join(ORDERINGS)}, got {ordering!r}")
    ranks = torch.empty(height, width, dtype=torch.long)
    ranks[rows] = torch.arange(height * width).view(height, width)
    return ranks


def subpixel_ranks(pixel_rank: torch.Tensor, channels: int) -> torch.Tensor:
    """``(H, W)`` pixel ranks -> ``(C, H, W)`` sub-pixel ranks, colour channels innermost."""
    return pixel_rank.unsqueeze(0) * channels + torch.arange(channels).view(-1, 1, 1)


@register_model(
    "made",
    "MADE: masked MLP over the flattened image (orderings, mask ensembles), "
    "factored K-way softmax per sub-pixel; exact log-likelihood",
)
class MADE(AutoregressiveImageModel):
    """MADE over the flattened image (see the module docstring).

    Masks, orderings and degrees are deterministic functions of the config (``order_seed``),
    rebuilt at construction and not stored in checkpoints; set 0 does not depend on ``n_masks``.
    The training-mode cycle over the mask sets is the buffer ``mask_step``, saved with the
    weights, so a resumed run continues where it stopped. :meth:`log_prob` never builds the
    ``(B, D, K)`` logits (:func:`factored_log_softmax`); :meth:`params_from_input` gives them for
    the generic sampler and the tests; :meth:`sample` is cached or naive (:mod:`made_cache`)."""

    Config = MADEConfig
    default_lr = 3e-3

    def __init__(self, config: MADEConfig, shape: tuple[int, int, int], levels: int) -> None:
        super().__init__(shape, levels, "softmax", config.n_classes)
        config.hidden_sizes = _check_config(config)
        self.config = config
        channels, height, width = self.shape
        self.n_masks = int(config.n_masks)
        self.direct = levels <= config.output_rank
        self.outputs_per_dim = levels if self.direct else int(config.output_rank)
        ranks, layer_masks, degrees = self._build_masks(config)
        self.register_buffer("ranks", ranks, persistent=False)  # (M, C, H, W)
        self.degrees = degrees  # per hidden layer, (M, width): for the cached sampler
        self.register_buffer("sample_order", ranks.flatten(1).argsort(1), persistent=False)  # (M, D)
        self.register_buffer("mask_step", torch.zeros((), dtype=torch.long))  # training-mode cycle
        self.hidden = nn.ModuleList(MaskedLinear(masks) for masks in layer_masks[:-1])
        self.out = MaskedLinear(layer_masks[-1], bias=False)
        self.level_features = None if self.direct else _level_features(levels, self.outputs_per_dim)
        self.logit_bias = nn.Parameter(torch.zeros(self.dim, levels))
        self.label_bias = LabelBias(self.n_classes, config.hidden_sizes[0], 0) if self.n_classes else None

    def _build_masks(self, config: MADEConfig) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Orderings ``(M, C, H, W)``, the stacked ``(M, out, in)`` masks of every layer and the
        stacked ``(M, width)`` degrees of every hidden layer."""
        channels, height, width = self.shape
        generator = torch.Generator().manual_seed(config.order_seed)
        first = subpixel_ranks(pixel_ranks(config.ordering, height, width, generator), channels)
        ranks, per_set, degrees = [], [], []
        for m in range(self.n_masks):
            rank = first
            if m > 0 and config.resample_order:
                rank = subpixel_ranks(pixel_ranks("random", height, width, generator), channels)
            hidden = hidden_degrees(list(config.hidden_sizes), self.dim, generator)
            ranks.append(rank)
            degrees.append(hidden)
            per_set.append(made_masks(rank.flatten() + 1, hidden, self.outputs_per_dim))
        return (torch.stack(ranks), [torch.stack(layer) for layer in zip(*per_set, strict=True)],
                [torch.stack(layer) for layer in zip(*degrees, strict=True)])

    # ----- parameters the base class and the trainer use -------------------------------------
    def output_weight(self) -> torch.Tensor:
        return self.out.weight

    def output_bias(self) -> torch.Tensor:
        """The per-sub-pixel bias ``b``, ``(D, K)`` (not ``(C, K)``: see initialize_from_data)."""
        return self.logit_bias

    @torch.no_grad()
    def initialize_from_data(self, x: torch.Tensor) -> None:
        """Zero the masked output weights (``U`` stays random so gradients reach them) and set
        ``b_{d,k}`` to the log of channel ``c(d)``'s smoothed histogram of values in ``x``."""
        self.out.weight.zero_()
        channels, height, width = self.shape
        per_channel = self.head.initial_bias(x, channels)  # (C, K)
        channel_of_dim = torch.arange(self.dim) // (height * width)
        self.logit_bias.copy_(per_channel[channel_of_dim].to(self.logit_bias))

    def order_rank(self, mask: int | None = None) -> torch.Tensor:
        """``(C, H, W)`` ranks of mask set ``mask``; by default of :meth:`active_mask`, the set
        :meth:`params_from_input` uses by default (set 0, the configured ordering, in eval mode)."""
        return self.ranks[self.active_mask() if mask is None else mask].cpu()

    def active_mask(self) -> int:
        """The mask set a single-set computation uses: the cycle's current one while training,
        set 0 in eval mode."""
        return int(self.mask_step) % self.n_masks if self.training else 0

    # ----- the network -------------------------------------------------------------------------
    def _hidden(self, flat: torch.Tensor, cond: torch.Tensor | None, mask: int) -> torch.Tensor:
        h = flat
        for index, layer in enumerate(self.hidden):
            h = layer(h, mask)
            if index == 0 and self.label_bias is not None and cond is not None:
                h = h + self.label_bias(cond)
            h = F.relu(h)
        return h

    def _logits(self, features: torch.Tensor, dims: slice) -> torch.Tensor:
        """Masked output features ``(B, n * P)`` of dimensions ``dims`` -> logits ``(B, n, K)``."""
        features = features.view(features.shape[0], -1, self.outputs_per_dim)
        if not self.direct:
            features = features @ self.level_features.t()
        return features + self.logit_bias[dims]

    def params_from_input(
        self, inputs: torch.Tensor, cond: torch.Tensor | None = None, mask: int | None = None
    ) -> torch.Tensor:
        """Scaled ``(B, C, H, W)`` -> logits ``(B, C, K, H, W)`` under mask set ``mask``
        (default: :meth:`active_mask`)."""
        mask = self.active_mask() if mask is None else mask
        h = self._hidden(inputs.flatten(1), cond, mask)
        logits = self._logits(self.out(h, mask), slice(None))
        b, (channels, height, width) = inputs.shape[0], self.shape
        return logits.view(b, channels, height, width, self.levels).permute(0, 1, 4, 2, 3)

    def dimension_params(
        self, inputs: torch.Tensor, cond: torch.Tensor | None, mask: int, dim: int
    ) -> torch.Tensor:
        """The logits ``(B, K)`` of flat sub-pixel ``dim`` alone (the output rows it owns)."""
        h = self._hidden(inputs.flatten(1), cond, mask)
        rows = slice(dim * self.outputs_per_dim, (dim + 1) * self.outputs_per_dim)
        return self._logits(self.out(h, mask, rows), slice(dim, dim + 1))[:, 0]

    def position_logits(self, features: torch.Tensor, dim: int) -> torch.Tensor:
        """The masked output features ``(B, P)`` of flat sub-pixel ``dim`` -> its logits ``(B, K)``."""
        return self._logits(features, slice(dim, dim + 1))[:, 0]

    @torch.no_grad()
    def masked_steps(self, mask: int, batch: int, cond: torch.Tensor | None) -> MaskedMLPSteps:
        """Mask set ``mask``'s network evaluated one sub-pixel at a time (:class:`MaskedMLPSteps`):
        inputs in the set's order, hidden units sorted by degree, output rows by position."""
        order = self.sample_order[mask]
        weights, extents, biases, columns, first = [], [], [], order, None
        for layer, degrees in zip(self.hidden, self.degrees, strict=True):
            perm = degrees[mask].argsort(stable=True).to(order.device)
            allowed = layer.masks[mask][perm][:, columns]
            weights.append(layer.weight[perm][:, columns] * allowed)
            extents.append(_extents(allowed))
            biases.append(layer.bias[perm])
            if first is None and self.label_bias is not None and cond is not None:
                first = self.label_bias(cond)[:, perm]
            columns = perm
        per_dim = self.outputs_per_dim
        rows = (order[:, None] * per_dim + torch.arange(per_dim, device=order.device)).flatten()
        allowed = self.out.masks[mask][rows][:, columns]
        weights.append(self.out.weight[rows][:, columns] * allowed)
        extents.append(_extents(allowed))
        biases.append(self.out.weight.new_zeros(len(rows)))
        return MaskedMLPSteps(weights, biases, extents, per_dim, "relu", batch, first)

    # ----- likelihood and sampling -------------------------------------------------------------
    def log_prob(
        self, x: torch.Tensor, cond: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Training mode: ``log P_m(x)`` under the current mask set ``m``, then the cycle moves
        on. Eval mode: the mixture ``log (1/M) sum_m P_m(x)`` (``P_0`` alone when ``M == 1``)."""
        self.check_input(x)
        cond = self.check_cond(cond, len(x))
        inputs = self.scale_input(x)
        if self.training or self.n_masks == 1:
            mask = self.active_mask()
            if self.training and self.n_masks > 1:
                self.mask_step += 1
            return self.log_prob_under(x, inputs, cond, mask)
        per_set = [self.log_prob_under(x, inputs, cond, m) for m in range(self.n_masks)]
        return torch.logsumexp(torch.stack(per_set), 0) - math.log(self.n_masks)

    def log_prob_under(
        self, x: torch.Tensor, inputs: torch.Tensor, cond: torch.Tensor | None, mask: int
    ) -> torch.Tensor:
        """``log P_mask(x)``: ``head.log_prob(params_from_input(inputs, cond, mask), x)``, computed
        without holding the ``(B, D, K)`` logits (see :func:`factored_log_softmax`)."""
        h = self._hidden(inputs.flatten(1), cond, mask)
        features = self.out(h, mask).view(len(x), self.dim, self.outputs_per_dim)
        return factored_log_softmax(features, self.level_features, self.logit_bias, x.flatten(1))

    @torch.no_grad()
    def sample(
        self,
        sample_shape: int | tuple[int, ...] = (),
        cond: torch.Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        method: str | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Images of shape ``(*sample_shape, C, H, W)`` drawn sub-pixel by sub-pixel.
        ``method``: ``"cached"`` (default) computes
        each hidden unit once, at the step where its last input arrives (:class:`MADECache`);
        ``"naive"`` runs the hidden layers once per sub-pixel, and only that sub-pixel's output
        rows (:class:`MADEPass`). Both draw the same values from the same uniform numbers.

        In eval mode with ``M > 1`` mask sets, each image first draws its set (``randint`` from
        ``generator``), then at step ``t`` every image gets the logits of the ``t``-th sub-pixel
        of its own set's order and one ``draw`` covers the whole batch. With one set (or in
        training mode, the current set) this draws the same values as the generic sampler of
        :class:`AutoregressiveImageModel` (``FullPass``).
        """
        method = "cached" if method is None else method
        if method not in METHODS:
            raise DensitylabError(f"unknown sampling method {method!r}; use one of {', '.join(METHODS)}")
        n, leading = sample_count(sample_shape)
        cond = self.check_cond(cond, n)
        x = torch.zeros(n, *self.shape, dtype=torch.long, device=self.device)
        if n == 0:
            return x.reshape(*leading, *self.shape)
        if self.training or self.n_masks == 1:
            choice = torch.full((n,), self.active_mask(), dtype=torch.long)
        else:
            choice = torch.randint(self.n_masks, (n,), generator=generator)
        choice = choice.to(self.device)
        state_type = MADECache if method == "cached" else MADEPass
        states = [state_type(self, x, cond, mask, rows) for mask, rows in _groups(choice, n)]
        flat, batch = x.view(n, -1), torch.arange(n, device=self.device)
        for step in tqdm(range(self.dim), disable=not progress, unit="sub-pixel", desc="sampling",
                         mininterval=0.5, leave=False):
            params = None
            for state in states:
                part = state.params_at(step)
                if state.rows is None:
                    params = part
                else:
                    params = part.new_zeros(n, self.levels) if params is None else params
                    params[state.rows] = part
            flat[batch, self.sample_order[choice, step]] = self.draw(params, temperature, generator)
        return x.reshape(*leading, *self.shape)


def factored_log_softmax(
    features: torch.Tensor,
    level_features: torch.Tensor | None,
    bias: torch.Tensor,
    target: torch.Tensor,
    chunk: int | None = None,
) -> torch.Tensor:
    """``sum_d log softmax_k(logits_{b,d})[target_{b,d}]``, shape ``(B,)``, with
    ``logits_{b,d,k} = features_{b,d} . U_k + bias_{d,k}`` (``U = level_features``), or
    ``features_{b,d,k} + bias_{d,k}`` when ``U`` is None.

    The numbers of ``log_softmax`` on the full ``(B, D, K)`` logits, computed on ``chunk``
    dimensions at a time (default: about 256k logits, a cache-sized block) so that tensor never
    exists: for 64 images of 28x28 with 256 levels it is 51 MB, written and re-read several times
    per step otherwise. When gradients are needed, the forward pass also accumulates them for an
    upstream gradient that is the same for every image (a mean or sum loss), so the backward pass
    only scales them; any other upstream gradient recomputes the logits. In at least float32.
    """
    dtype = torch.promote_types(features.dtype, torch.float32)
    batch, dims = target.shape
    if chunk is None:
        chunk = min(dims, max(8, (1 << 18) // max(1, batch * bias.shape[-1])))
    inputs = [t for t in (features, level_features, bias) if t is not None]
    eager = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    u = None if level_features is None else level_features.to(dtype)
    with torch.autocast(features.device.type, enabled=False):  # its own products stay in >= fp32
        return _FactoredLogSoftmax.apply(
            features.to(dtype), u, bias.to(dtype), target.long(), max(1, int(chunk)), eager
        )


class _Blocks:
    """Dimension-major copies ``(D, B, .)`` of the inputs of :func:`factored_log_softmax`, and the
    logits and gradients of one block of dimensions at a time."""

    def __init__(
        self,
        features: torch.Tensor,
        u: torch.Tensor | None,
        bias: torch.Tensor,
        target: torch.Tensor,
        chunk: int,
    ) -> None:
        self.features = features.transpose(0, 1).contiguous()  # (D, B, P)
        self.u_t = None if u is None else u.t().contiguous()  # (F, K)
        self.bias = bias.unsqueeze(1)  # (D, 1, K)
        self.target = target.t().unsqueeze(-1).contiguous()  # (D, B, 1)
        self.slices = [slice(s, s + chunk) for s in range(0, target.shape[1], chunk)]

    def logits(self, dims: slice) -> torch.Tensor:
        """``(n, B, K)`` logits of the dimensions ``dims`` (a new tensor, safe to modify)."""
        part = self.features[dims]
        if self.u_t is None:
            return part + self.bias[dims]
        return torch.baddbmm(self.bias[dims], part, self.u_t.expand(len(part), -1, -1))

    def d_logits(self, softmax: torch.Tensor, dims: slice) -> torch.Tensor:
        """Turn ``softmax`` of block ``dims`` in place into ``onehot(target) - softmax``, the
        gradient of the log-likelihood w.r.t. the logits."""
        d = softmax.neg_()
        return d.scatter_add_(-1, self.target[dims], torch.ones_like(self.target[dims], dtype=d.dtype))

    def new_gradients(self) -> dict[str, torch.Tensor]:
        grads = {"features": torch.empty_like(self.features), "bias": torch.empty_like(self.bias[:, 0])}
        if self.u_t is not None:
            grads["u_t"] = torch.zeros_like(self.u_t)
        return grads

    def accumulate(self, dims: slice, d: torch.Tensor, grads: dict[str, torch.Tensor]) -> None:
        """Add the gradients of block ``dims``, given ``d (n, B, K)`` w.r.t. its logits."""
        grads["bias"][dims] = d.sum(1)
        if self.u_t is None:
            grads["features"][dims] = d
            return
        flat = d.view(-1, d.shape[-1])  # (n * B, K); K-wide BLAS outputs are several times faster
        grads["features"][dims] = (self.u_t @ flat.t()).t().view(d.shape[0], d.shape[1], -1)
        grads["u_t"].addmm_(self.features[dims].view(-1, self.u_t.shape[0]).t(), flat)

    def gradients(self, log_norm: torch.Tensor, per_image: torch.Tensor) -> dict[str, torch.Tensor]:
        """All gradients for an upstream gradient ``per_image (1, B, 1)``, recomputing the logits."""
        grads = self.new_gradients()
        for dims in self.slices:
            softmax = self.logits(dims).sub_(log_norm[dims].unsqueeze(-1)).exp_()
            d = self.d_logits(softmax, dims).mul_(per_image)
            self.accumulate(dims, d, grads)
        return grads


class _FactoredLogSoftmax(torch.autograd.Function):
    """The autograd of :func:`factored_log_softmax`: d/dlogits = grad * (onehot(target) - softmax)."""

    @staticmethod
    def forward(
        ctx: Any,
        features: torch.Tensor,
        u: torch.Tensor | None,
        bias: torch.Tensor,
        target: torch.Tensor,
        chunk: int,
        eager: bool,
    ) -> torch.Tensor:
        blocks = _Blocks(features, u, bias, target, chunk)
        picked = blocks.features.new_empty(target.t().shape)  # (D, B)
        log_norm = torch.empty_like(picked)
        grads = blocks.new_gradients() if eager else None
        for dims in blocks.slices:
            logits = blocks.logits(dims)
            picked[dims] = logits.gather(-1, blocks.target[dims]).squeeze(-1)
            shift = logits.amax(-1, keepdim=True)
            exp = logits.sub_(shift).exp_()  # one exp per logit serves the value and the gradient
            total = exp.sum(-1, keepdim=True)
            log_norm[dims] = (shift + total.log()).squeeze(-1)
            if grads is not None:  # for a unit upstream gradient, from the logits at hand
                blocks.accumulate(dims, blocks.d_logits(exp.div_(total), dims), grads)
        ctx.blocks, ctx.grads = blocks, grads
        ctx.save_for_backward(log_norm)
        return (picked - log_norm).sum(0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (log_norm,) = ctx.saved_tensors
        blocks, grads = ctx.blocks, ctx.grads
        per_image = grad.view(1, -1, 1)
        if grads is not None and (grad.numel() == 0 or bool((grad == grad[0]).all())):
            common = grad[0] if grad.numel() else grad.new_zeros(())
            grads = {"features": grads["features"] * per_image} | {
                name: value * common for name, value in grads.items() if name != "features"
            }
        else:
            grads = blocks.gradients(log_norm, per_image)
        grad_u = grads["u_t"].t() if "u_t" in grads else None
        return grads["features"].transpose(0, 1), grad_u, grads["bias"], None, None, None


def _groups(choice: torch.Tensor, n: int) -> list[tuple[int, torch.Tensor | None]]:
    """``(mask set, rows of the batch using it)``; rows is None when one set serves everyone."""
    used = torch.unique(choice).tolist()
    if len(used) == 1:
        return [(used[0], None)]
    return [(m, torch.nonzero(choice == m).squeeze(1)) for m in used]


def _extents(allowed: torch.Tensor) -> torch.Tensor:
    """``(out, in)`` mask -> for each row, one past the last input it reads (0 for none)."""
    columns = torch.arange(1, allowed.shape[1] + 1, device=allowed.device)
    return (allowed * columns).amax(1).cpu() if allowed.shape[1] else allowed.new_zeros(len(allowed)).long()


def _level_features(levels: int, rank: int) -> nn.Parameter:
    """``U (K, F)``, initialised like an ``F -> K`` linear layer."""
    return nn.Parameter(torch.empty(levels, rank).uniform_(-1, 1) / math.sqrt(rank))


def _check_config(config: MADEConfig) -> list[int]:
    """Validate ``config``; returns ``hidden_sizes`` as a list (a single width becomes ``[width]``)."""
    sizes = config.hidden_sizes
    sizes = [sizes] if isinstance(sizes, int) else sizes
    if (
        not isinstance(sizes, list | tuple)
        or not sizes
        or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes)
    ):
        raise ValueError(f"hidden_sizes must list at least one positive width, got {config.hidden_sizes!r}")
    if config.output_rank < 1 or config.n_masks < 1:
        raise ValueError("output_rank and n_masks must be >= 1")
    if config.ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {', '.join(ORDERINGS)}, got {config.ordering!r}")
    return [int(s) for s in sizes]
