"""densitylab: autoregressive models and normalizing flows, scored in exact bits/dim.

The shared contract (docs/design.md): ``model.log_prob(x)`` is ``log P(x)`` in nats of discrete
data ``x`` (integers in ``{0..K-1}``, shape ``(B, C, H, W)`` or ``(B, D)``); ``bits/dim =
-log_prob / (D ln 2)``; continuous data (``levels == 0``) is scored in nats/dim.

    import densitylab as dl
    model = dl.load("runs/x")                        # a run made by ``densitylab train``
    model.log_prob(x); model.sample((4,))
    flow = dl.build_model("maf", (2,), 0)            # or compose one from dl.transforms
    dl.fit(flow, points, steps=500)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Imported on first use (PEP 562), so ``densitylab --help`` does not pay for importing torch.
_EXPORTS = {
    "DensitylabError": "densitylab.errors",
    "DensityModel": "densitylab.models.base",
    "available_models": "densitylab.models.registry",
    "build_model": "densitylab.models.registry",
    "Flow": "densitylab.models.flows.flow",
    "fit": "densitylab.api",
    "load": "densitylab.api",
}
__all__ = [*_EXPORTS, "transforms"]


def __getattr__(name: str) -> Any:
    if name == "transforms":
        return importlib.import_module("densitylab.transforms")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'densitylab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
