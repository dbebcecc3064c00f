"""Every model module is imported here so that it registers its name."""

from densitylab.models.autoregressive import gated_pixelcnn, made, pixelcnn, rnn, wavenet  # noqa: F401
from densitylab.models.base import DensityModel, available_models, build_model
from densitylab.models.flows import realnvp  # noqa: F401

__all__ = ["DensityModel", "available_models", "build_model"]
