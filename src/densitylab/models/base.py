"""The protocol every densitylab model follows, and the registry of model names.

A model is an ``nn.Module`` built from ``(config, shape, levels)``:

- ``log_prob(x, cond=None, generator=None) -> Tensor[B]``: ``log P(x)`` in nats of integer data ``x``
  with values in ``{0..levels-1}`` and shape ``(B, *shape)`` (flows return the dequantization bound);
- ``sample(n, cond=None, temperature=1.0, generator=None)``: integer data like the training data;
- ``bits_per_dim(x) = -log_prob(x) / (D ln 2)``.

``shape`` is ``(C, H, W)`` for images or ``(D,)`` for vectors (the 1D and 2D toys). ``levels == 0``
marks continuous data (float vectors): there ``log_prob`` is a density in nats and the unit is
nats/dim (docs/design.md, section 1). Each model class declares in ``data_kinds`` which of ``"image"``,
``"vector"`` and ``"continuous"`` it accepts; :func:`build_model` refuses the others in one line.

Models are registered by name with :func:`register_model` so the CLI, the Python API and a
checkpoint all construct them the same way, through :func:`build_model`.
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


class DensityModel(nn.Module):
    """Base class: stores the data shape and number of levels and validates inputs."""

    family: ClassVar[str] = "model"
    Config: ClassVar[type]
    default_lr: ClassVar[float] = 1e-3  # Adam learning rate used when a run does not set one
    data_kinds: ClassVar[frozenset[str]] = frozenset({"image"})

    def __init__(self, shape: tuple[int, ...], levels: int) -> None:
        super().__init__()
        if len(shape) not in (1, 3):
            raise DensitylabError(f"data shape must be (C, H, W) or (D,), got {tuple(shape)}")
        self.shape = tuple(int(s) for s in shape)
        self.levels = int(levels)

    @property
    def continuous(self) -> bool:
        """True for real-valued data (``levels == 0``), scored in nats/dim."""
        return self.levels == 0

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
            if x.numel() and not bool(torch.isfinite(x).all()):
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

    def step_metrics(self) -> dict[str, float]:
        """Numbers about the last training step the model wants logged (e.g. FFJORD's number of
        function evaluations); default none."""
        return {}

    def initialize_from_data(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation before the first step (default: nothing)."""

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
        n: int,
        cond: torch.Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def bits_per_dim(
        self,
        x: torch.Tensor,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return -self.log_prob(x, cond, generator) / (self.dim * math.log(2))

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    cls: type[DensityModel]
    description: str


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, description: str) -> Callable[[type], type]:
    """Class decorator: make a model constructible by ``name``."""

    def decorate(cls: type) -> type:
        _REGISTRY[name] = ModelInfo(name, cls, description)
        cls.registry_name = name
        return cls

    return decorate


def available_models() -> dict[str, ModelInfo]:
    import densitylab.models  # noqa: F401  (registers every model)

    return dict(_REGISTRY)


def model_config(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """The config dataclass of model ``name`` with ``overrides`` applied (unknown keys refused)."""
    models = available_models()
    if name not in models:
        raise DensitylabError(
            f"unknown model {name!r}; choose one of {', '.join(sorted(models))} "
            "(see 'densitylab list')"
        )
    from densitylab.config import coerce_fields

    config_cls = models[name].cls.Config
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(overrides or {}) - fields
    if unknown:
        raise DensitylabError(
            f"model {name!r} has no option {', '.join(sorted(unknown))}; its options are "
            f"{', '.join(sorted(fields))}"
        )
    return config_cls(**coerce_fields(config_cls, overrides or {}, f"model {name!r}"))


def data_kind_problem(name: str, shape: tuple[int, ...], levels: int) -> str | None:
    """Why model ``name`` cannot take data of ``shape`` / ``levels`` (None when it can)."""
    models = available_models()
    kinds = models[name].cls.data_kinds
    needed = "image" if len(shape) == 3 else "vector"
    what = f"{'continuous ' if levels == 0 else ''}{'images' if needed == 'image' else 'vectors'}"
    if needed not in kinds or (levels == 0 and "continuous" not in kinds):
        fit = sorted(n for n, i in models.items() if needed in i.cls.data_kinds
                     and (levels or "continuous" in i.cls.data_kinds))
        return (f"model {name!r} does not take {what} of shape {tuple(shape)}; "
                f"use one of {', '.join(fit)} for this data")
    return None


def build_model(
    name: str,
    shape: tuple[int, ...],
    levels: int,
    config: dict[str, Any] | Any | None = None,
) -> DensityModel:
    """Construct model ``name`` for data of ``shape`` with ``levels`` values per entry
    (``levels == 0``: continuous data).

    ``config`` is the model's config dataclass, or a dict of overrides of its defaults.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    cfg = model_config(name, config)
    problem = data_kind_problem(name, tuple(shape), levels)
    if problem:
        raise DensitylabError(problem)
    try:
        return available_models()[name].cls(cfg, tuple(shape), levels)
    except ValueError as exc:  # an option value the architecture cannot take
        raise DensitylabError(f"model {name!r}: {exc}; change the option") from None
