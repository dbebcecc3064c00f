"""densitylab: autoregressive models and normalizing flows, scored in exact bits/dim.

The shared contract (see docs/design.md): ``model.log_prob(x)`` is ``log P(x)`` in nats of
discrete data ``x`` (integers in ``{0..K-1}``, shape ``(B, C, H, W)``);
``bits/dim = -log_prob / (D ln 2)``.

The names below import torch on first use, so that ``densitylab --help`` answers at once.
"""

from importlib import import_module
from typing import Any

from densitylab.errors import DensitylabError

__version__ = "0.1.0"

_LAZY = {
    "DensityModel": "densitylab.models.base",
    "available_models": "densitylab.models.base",
    "build_model": "densitylab.models.base",
}

__all__ = ["DensitylabError", "DensityModel", "available_models", "build_model"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'densitylab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
