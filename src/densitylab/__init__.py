"""densitylab: autoregressive models and normalizing flows, scored in exact bits/dim.

The shared contract (see DESIGN.md): ``model.log_prob(x)`` is ``log P(x)`` in nats of discrete
data ``x`` (integers in ``{0..K-1}``, shape ``(B, C, H, W)``); ``bits/dim = -log_prob / (D ln 2)``.
"""

from densitylab.errors import DensitylabError
from densitylab.models.base import DensityModel, available_models, build_model

__all__ = ["DensitylabError", "DensityModel", "available_models", "build_model"]
__version__ = "0.1.0"
