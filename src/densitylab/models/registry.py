"""The registry of model names: build any model by name, as the CLI, the Python API and a
checkpoint do. Importing this module imports every model module, so each has registered itself
(with :func:`densitylab.models.base.register_model`) before a name is looked up."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

from densitylab.errors import DensitylabError
from densitylab.models import autoregressive, flows
from densitylab.models.base import _REGISTRY, DensityModel, ModelInfo

for _package in (autoregressive, flows):
    for _module in pkgutil.iter_modules(_package.__path__):
        importlib.import_module(f"{_package.__name__}.{_module.name}")


def available_models() -> dict[str, ModelInfo]:
    """Every registered model by name (importing this module imported them all)."""
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

    config_cls = models[name].Config
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
    kinds = models[name].data_kinds
    needed = "image" if len(shape) == 3 else "vector"
    what = f"{'continuous ' if levels == 0 else ''}{'images' if needed == 'image' else 'vectors'}"
    if needed not in kinds or (levels == 0 and "continuous" not in kinds):
        fit = sorted(n for n, i in models.items() if needed in i.data_kinds
                     and (levels or "continuous" in i.data_kinds))
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
    info = available_models()[name]
    try:
        model = info.factory(cfg, tuple(shape), levels)
    except ValueError as exc:  # an option value the architecture cannot take
        raise DensitylabError(f"model {name!r}: {exc}; change the option") from None
    model.config, model.registry_name = cfg, name
    model.default_lr = info.default_lr  # type: ignore[misc]
    return model
