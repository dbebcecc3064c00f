"""IAF as a density model (Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, 2016,
"Improved Variational Inference with Inverse Autoregressive Flow").

The same stack ``T = T_n o ... o T_1`` of masked autoregressive transforms as MAF (``maf.py``),
used the other way round: ``T`` maps noise to data. So

    sampling:   y = T(u), u ~ N(0, I)                       one MADE pass per transform
    density:    log p_Y(y) = log N(T^{-1}(y); 0, I) + log|det dT^{-1}/dy|    D passes per transform

(plus the logit preprocessing of images, as in MAF). The model's ``transform`` is
``InverseTransform(T)`` and ``T`` is literally MAF's module: an IAF whose inner stack is loaded
with a MAF's state dict samples, in one pass per transform, by the map MAF uses for density
evaluation. Training by maximum likelihood costs ``D`` passes per transform and step (the
backward pass uses the implicit function theorem: ``autoregressive.py``); IAF is the fast
sampler, MAF the fast density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from densitylab.models.base import register_model
from densitylab.models.flows.autoregressive import InverseTransform
from densitylab.models.flows.flow import Flow
from densitylab.models.flows.maf import MAFConfig, autoregressive_flow, autoregressive_stack, check_config


@dataclass
class IAFConfig(MAFConfig):
    """The same options as MAF's (its defaults are the paper-sized image model: with ``D = 784``
    density evaluation takes 784 passes per transform, so train IAF on small data)."""


@register_model("iaf", "IAF: the inverse of MAF's masked autoregressive stack; sampling in one "
                "pass per transform, density in D; dequantization bound", config=IAFConfig,
                default_lr=1e-3, data_kinds=frozenset({"image", "vector", "continuous"}))
def iaf(config: IAFConfig, shape: tuple[int, ...], levels: int) -> Flow:
    """IAF: ``Flow([logit ->] (T_n o ... o T_1)^-1 -> prior)`` with MAF's stack ``T``."""
    config = check_config(config)
    return autoregressive_flow(config, shape, levels,
                               InverseTransform(autoregressive_stack(config, math.prod(shape))))
