"""The protocol every densitylab model follows, and the registry of model names.

A model is an ``nn.Module`` built from ``(config, shape, levels)``:

- ``log_prob(x, cond=None, generator=None) -> Tensor[B]``: ``log P(x)`` in nats of integer images ``x`` with
  values in ``{0..levels-1}`` and shape ``(B, *shape)`` (flows return the dequantization bound);
- ``sample(n, cond=None, temperature=1.0, generator=None)``: integer images like the data;
- ``bits_per_dim(x) = -log_prob(x) / (D ln 2)``.

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

    def __init__(self, shape: tuple[int, int, int], levels: int) -> None:
        super().__init__()
        if len(shape) != 3:
            raise DensitylabError(f"image shape must be (C, H, W), got {tuple(shape)}")
        self.shape = tuple(int(s) for s in shape)
        self.levels = int(levels)

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a one-line error for a batch of the wrong shape, dtype or value range."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.shape:
            raise DensitylabError(
                f"expected images of shape (B, {', '.join(map(str, self.shape))}), got "
                f"{tuple(x.shape)}; check the dataset and the model's shape"
            )
        if x.dtype.is_floating_point or x.dtype == torch.bool:
            raise DensitylabError(
                f"expected integer images in 0..{self.levels - 1}, got dtype {x.dtype}"
            )
        if x.numel():
            low, high = (int(v) for v in torch.aminmax(x))
            if low < 0 or high >= self.levels:
                raise DensitylabError(
                    f"pixel values must lie in 0..{self.levels - 1} for {self.levels} levels, "
                    f"found {low}..{high}; quantize the data with --n-bits"
                )

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


def build_model(
    name: str,
    shape: tuple[int, int, int],
    levels: int,
    config: dict[str, Any] | Any | None = None,
) -> DensityModel:
    """Construct model ``name`` for images of ``shape`` with ``levels`` values per pixel.

    ``config`` is the model's config dataclass, or a dict of overrides of its defaults.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    cfg = model_config(name, config)
    try:
        return available_models()[name].cls(cfg, tuple(shape), levels)
    except ValueError as exc:  # an option value the architecture cannot take
        raise DensitylabError(f"model {name!r}: {exc}; change the option") from None
