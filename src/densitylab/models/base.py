"""The protocol every densitylab model follows, and the registry of model names.

A model is an ``nn.Module`` built from ``(config, shape, levels)``:

- ``log_prob(x, cond=None, generator=None) -> Tensor[B]``: ``log P(x)`` in nats of integer data ``x``
  with values in ``{0..levels-1}`` and shape ``(B, *shape)`` (flows return the dequantization bound);
- ``sample(sample_shape, cond=None, temperature=1.0, generator=None)``: data like the training data,
  of shape ``(*sample_shape, *shape)`` (``sample_shape`` an int or a shape);
- ``bits_per_dim(x) = -log_prob(x) / (D ln 2)``;
- ``initialize(x)``: the explicit, one-off data-dependent initialisation; ``log_prob`` never
  changes a parameter.

``shape`` is ``(C, H, W)`` for images or ``(D,)`` for vectors (the 1D and 2D toys). ``levels == 0``
marks continuous data (float vectors): there ``log_prob`` is a density in nats and the unit is
nats/dim (see docs/design.md). Each registered model declares in ``data_kinds`` which of
``"image"``, ``"vector"`` and ``"continuous"`` it accepts; :func:`build_model` refuses the others in
one line.

Models are registered by name with :func:`register_model` (a class, or for flows a constructor
function) so the CLI, the Python API and a checkpoint all construct them the same way, through
:func:`build_model`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from densitylab.errors import DensitylabError


def sample_count(sample_shape: int | tuple[int, ...] | torch.Size) -> tuple[int, tuple[int, ...]]:
    """``sample_shape`` (an int or a shape, as in ``torch.distributions``) -> ``(n, shape)`` with
    ``n`` the number of samples to draw and ``shape`` the leading dimensions to give them."""
    shape = (int(sample_shape),) if isinstance(sample_shape, int) else tuple(int(s) for s in sample_shape)
    if any(s < 0 for s in shape):
        raise DensitylabError(f"sample_shape must hold non-negative sizes, got {shape}")
    return math.prod(shape), shape


class DensityModel(nn.Module):
    """Base class: stores the data shape and number of levels, validates inputs, and gives the
    ``torch.distributions``-style entry points (``log_prob``, ``sample(sample_shape)``)."""

    family: ClassVar[str] = "model"
    Config: ClassVar[type]
    default_lr: ClassVar[float] = 1e-3  # Adam learning rate used when a run does not set one
    data_kinds: ClassVar[frozenset[str]] = frozenset({"image"})
    registry_name: str = "model"

    def __init__(self, shape: tuple[int, ...], levels: int) -> None:
        super().__init__()
        if len(shape) not in (1, 3):
            raise DensitylabError(f"data shape must be (C, H, W) or (D,), got {tuple(shape)}")
        self.shape = tuple(int(s) for s in shape)
        self.levels = int(levels)
        # whether :meth:`initialize` ran; saved with the weights, so a checkpoint records it
        self.register_buffer("initialized", torch.tensor(False))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "initialized"
        if key not in state_dict:  # weights saved before the flag existed were always initialised
            state_dict = {**state_dict, key: torch.tensor(True)}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    @property
    def continuous(self) -> bool:
        """True for real-valued data (``levels == 0``), scored in nats/dim."""
        return self.levels == 0

    @property
    def conditional(self) -> bool:
        """Whether the model takes a ``cond`` (class labels or a continuous context)."""
        return False

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a one-line error for a batch of the wrong shape, dtype or value range."""
        if x.dim() != len(self.shape) + 1 or tuple(x.shape[1:]) != self.shape:
            raise DensitylabError(
                f"expected data of shape (B, {', '.join(map(str, self.shape))}), got "
                f"{tuple(x.shape)}; check the dataset and the model's shape"
            )
        if self.continuous:
            if not x.dtype.is_floating_point:
                raise DensitylabError(f"expected real-valued data, got dtype {x.dtype}")
            if x.numel() and not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
                raise DensitylabError("the data holds NaN or infinite values; clean it first")
            return
        if x.dtype.is_floating_point or x.dtype == torch.bool:
            raise DensitylabError(
                f"expected integer images in 0..{self.levels - 1}, got dtype {x.dtype}"
            )
        if x.numel() and not torch.compiler.is_compiling():
            # the range check reads values back (a device sync, and a graph break under
            # torch.compile); compiled training skips it: the datasets check their range on load
            low, high = (int(v) for v in torch.aminmax(x))
            if low < 0 or high >= self.levels:
                raise DensitylabError(
                    f"pixel values must lie in 0..{self.levels - 1} for {self.levels} levels, "
                    f"found {low}..{high}; quantize the data with --n-bits"
                )

    def refuse_cond(self, cond: torch.Tensor | None) -> None:
        """The one error of an unconditional model given a ``cond``."""
        if cond is not None:
            raise DensitylabError(
                f"model {self.registry_name!r} is unconditional (not class-conditional, no "
                "context): drop cond, or train it with --conditional or on data with a context"
            )

    def step_metrics(self) -> dict[str, float]:
        """Numbers about the last training step the model wants logged (e.g. FFJORD's number of
        function evaluations); default none."""
        return {}

    def training_penalty(self) -> torch.Tensor | None:
        """A regularizer of the last training forward pass to add to the loss, per example in
        nats/dim (e.g. FFJORD's RNODE penalty), handed over once; default none. Evaluation never
        includes it."""
        return None

    def initialize_from_data(self, x: torch.Tensor) -> None:
        """The model's data-dependent initialisation (default: nothing); see :meth:`initialize`."""

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> DensityModel:
        """Data-dependent initialisation from a batch of training data ``x`` (ActNorm statistics,
        output biases at the data's histogram, mixture quantiles, ...), once, before training.
        It is the only step that sets parameters from data: :meth:`log_prob` never does. Returns
        the model; a second call does nothing (the flag is saved with the weights)."""
        if not bool(self.initialized):
            self.initialize_from_data(x)
            self.initialized.fill_(True)
        return self

    def log_prob(
        self,
        x: torch.Tensor,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``log P(x)`` in nats, shape ``(B,)``. ``generator`` feeds stochastic bounds (the
        dequantization noise of flows); exact models ignore it."""
        raise NotImplementedError

    def sample(
        self,
        sample_shape: int | tuple[int, ...] = (),
        cond: torch.Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Samples of shape ``(*sample_shape, *shape)``, like the training data."""
        raise NotImplementedError

    def bits_per_dim(
        self,
        x: torch.Tensor,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return -self.log_prob(x, cond, generator) / (self.dim * math.log(2))

    def config_dict(self) -> dict[str, Any]:
        """The options the model was built with ({} for a model built by hand)."""
        config = getattr(self, "config", None)
        return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {}


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: how to build it (``factory(config, shape, levels)``) and what it takes."""

    name: str
    description: str
    family: str
    Config: type
    default_lr: float
    data_kinds: frozenset[str]
    factory: Callable[[Any, tuple[int, ...], int], DensityModel]


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    description: str,
    *,
    config: type | None = None,
    family: str | None = None,
    default_lr: float | None = None,
    data_kinds: frozenset[str] | None = None,
) -> Callable[[Any], Any]:
    """Make a model constructible by ``name``: decorates a :class:`DensityModel` subclass (its
    class attributes ``Config``, ``family``, ``default_lr``, ``data_kinds`` describe it) or a
    constructor function ``(config, shape, levels) -> DensityModel`` (described by the keyword
    arguments), as the flows are: compositions of transforms, not subclasses."""

    def decorate(factory: Any) -> Any:
        is_class = isinstance(factory, type)
        _REGISTRY[name] = ModelInfo(
            name, description,
            family or (factory.family if is_class else "flow"),
            config or factory.Config,
            default_lr if default_lr is not None else (factory.default_lr if is_class else 1e-3),
            data_kinds or (factory.data_kinds if is_class else frozenset({"image"})),
            factory,
        )
        if is_class:
            factory.registry_name = name
        return factory

    return decorate
