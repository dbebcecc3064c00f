"""Mixed precision for training: the networks run under ``torch.autocast``, the likelihood in fp32.

``--precision bf16|fp16`` runs the training loss under ``torch.autocast`` on the run's device, so
convolutions and matrix products (the networks) use the low-precision type. A density model then
*sums* those outputs into log-likelihoods: log-determinants of flows, log-softmax normalizers and
per-image sums over thousands of dimensions. Those must accumulate in fp32 (docs/design.md, section 4):
a log-likelihood of -1000 nats held in bf16 is only known to within 4 nats.

CUDA's autocast already runs sums, ``log_softmax``, ``exp``, ``log`` and friends in fp32, the CPU's
does not. :class:`Float32Reductions` closes that gap on every device, for every model, without
touching model code: while it is active, the reductions and log-space functions listed in
``FLOAT32_OPS`` receive fp32 copies of low-precision inputs (as CUDA autocast does for its fp32
list). The per-image loss is cast to fp32 before its batch mean. Evaluation (test bits/dim) does not
use autocast at all and stays exact fp32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from densitylab.errors import DensitylabError

# Reductions and log-space functions that must not run in bf16/fp16. Names of torch functions and
# Tensor methods alike (``torch.sum`` and ``Tensor.sum`` are both called "sum").
FLOAT32_OPS = frozenset({
    "sum", "mean", "prod", "cumsum", "cumprod", "logsumexp", "logcumsumexp", "log_softmax",
    "softmax", "norm", "exp", "expm1", "log", "log1p", "log2", "softplus", "logsigmoid", "pow",
    "__pow__", "rsqrt", "reciprocal", "slogdet", "logdet", "det", "nll_loss", "cross_entropy",
})
_LOW = (torch.bfloat16, torch.float16)


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype in _LOW:
        return value.float()
    return value


class Float32Reductions(TorchFunctionMode):
    """Run the ops of ``FLOAT32_OPS`` in fp32 when given bf16/fp16 tensors."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in FLOAT32_OPS:
            args, kwargs = tree_map(_to_float32, (args, kwargs))
        return func(*args, **kwargs)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast type of ``--precision`` on ``device`` (None for fp32); refuses what cannot run."""
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise DensitylabError("--precision fp16 needs a CUDA GPU (it uses a gradient scaler there); "
                              "on a CPU use --precision bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DensitylabError("this GPU has no bf16 support; use --precision fp16 or fp32")
    return torch.bfloat16 if precision == "bf16" else torch.float16


class TrainingLoss(nn.Module):
    """The per-image training loss of ``model`` in bits/dim (``-log_prob / (D ln 2)``), in fp32.

    A module so that DistributedDataParallel can wrap it (DDP synchronizes the gradients of what
    runs through its ``forward``) and ``torch.compile`` can compile it; ``model`` stays the one
    object that holds the parameters, and checkpoints and evaluation use it directly.
    """

    def __init__(self, model: nn.Module, autocast: torch.dtype | None = None,
                 device_type: str = "cpu") -> None:
        super().__init__()
        self.model = model
        self.autocast = autocast
        self.device_type = device_type

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None,
                generator: torch.Generator | None) -> torch.Tensor:
        if self.autocast is None:
            return self.model.bits_per_dim(x, labels, generator=generator)
        with torch.autocast(self.device_type, dtype=self.autocast), Float32Reductions():
            per_image = self.model.bits_per_dim(x, labels, generator=generator)
        return per_image.float()
