"""Importing this package imports every model module, so each registers its name."""

import importlib
import pkgutil

from densitylab.models import autoregressive, flows
from densitylab.models.base import DensityModel, available_models, build_model

for _package in (autoregressive, flows):
    for _module in pkgutil.iter_modules(_package.__path__):
        importlib.import_module(f"{_package.__name__}.{_module.name}")

__all__ = ["DensityModel", "available_models", "build_model"]
