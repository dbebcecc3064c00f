"""Checks of a checkpoint's tensors against the model and optimizer they are loaded into.

Each mismatch is one line naming the file, the tensor, its shape (and dtype) and what was
expected, raised before anything is loaded: a wrong tensor never reaches a forward pass or an
optimizer step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from densitylab.errors import DensitylabError


def _shape(tensor: torch.Tensor) -> str:
    return f"({', '.join(str(s) for s in tensor.shape)})" if tensor.dim() != 1 else f"({tensor.shape[0]},)"


def _describe(tensor: torch.Tensor) -> str:
    return f"shape {_shape(tensor)} and dtype {str(tensor.dtype).removeprefix('torch.')}"


def _kind(tensor: torch.Tensor) -> str:
    """Floating weights load into any floating precision (as ``load_state_dict`` casts them);
    integers and booleans only into their own kind."""
    if tensor.dtype.is_floating_point:
        return "floating"
    return "complex" if tensor.dtype.is_complex else str(tensor.dtype)


def check_model_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path | str) -> None:
    """Every ``model.*`` tensor of the file present, with the model's shape and kind of dtype, and
    no other."""
    expected = model.state_dict()
    saved = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    missing = [name for name in expected if name not in saved]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DensitylabError(f"{path} lacks tensor model.{missing[0]}{more} of the model; it was written "
                              "by another model or version: retrain, or use the matching checkpoint")
    unexpected = [name for name in saved if name not in expected]
    if unexpected:
        raise DensitylabError(f"{path} holds tensor model.{unexpected[0]}, which the model does not have; "
                              "it was written by another model or version: retrain")
    for name, want in expected.items():
        got = saved[name]
        if got.shape != want.shape or _kind(got) != _kind(want):
            raise DensitylabError(f"{path}: tensor model.{name} has {_describe(got)}, the model expects "
                                  f"{_describe(want)}; the file does not fit this model")


def check_resumable(tensors: dict[str, torch.Tensor], header: dict[str, Any], path: Path | str,
                    weights_note: str) -> None:
    """A checkpoint that training can continue from holds the training position, the optimizer's
    state and the random number generators' states."""
    missing = []
    if not isinstance(header.get("state"), dict):
        missing.append("training position (header 'state')")
    if not isinstance(header.get("optimizer"), dict):
        missing.append("optimizer state")
    if "rng.torch" not in tensors or "rng.noise" not in tensors:
        missing.append("RNG state (rng.torch, rng.noise)")
    if missing:
        raise DensitylabError(f"{path} holds no {', no '.join(missing)}, so training cannot continue from "
                              f"it; {weights_note}")
    for key in ("rng.torch", "rng.noise"):
        if tensors[key].dtype != torch.uint8 or tensors[key].dim() != 1:
            raise DensitylabError(f"{path}: tensor {key} has {_describe(tensors[key])}, an RNG state is "
                                  "a 1-d uint8 tensor; retrain, or resume from another copy")


def check_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                          header: dict[str, Any], path: Path | str,
                          names: list[str] | None = None) -> None:
    """The saved optimizer state fits ``optimizer``: as many groups and parameters, and every
    per-parameter tensor with its parameter's shape and dtype (scalars such as Adam's step aside)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    names = names or [f"parameter {i}" for i in range(len(params))]
    saved = header["optimizer"]
    groups = saved.get("param_groups")
    if (not isinstance(groups, list) or len(groups) != len(optimizer.param_groups)
            or any(len(g.get("params", ())) != len(o["params"])
                   for g, o in zip(groups, optimizer.param_groups, strict=True))):
        raise DensitylabError(f"{path}: the optimizer state is for other parameter groups than the "
                              f"model's ({len(params)} parameters); retrain")
    for key, value in tensors.items():
        if not key.startswith("optim."):
            continue
        parts = key.split(".", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            raise DensitylabError(f"{path}: tensor {key} is not an optimizer state entry; retrain")
        index = int(parts[1])
        if index >= len(params):
            raise DensitylabError(f"{path}: optimizer tensor {key} refers to parameter {index}, the "
                                  f"model has {len(params)}; retrain")
        param = params[index]
        if value.dim() == 0:
            if not value.dtype.is_floating_point and value.dtype not in (torch.int64, torch.int32):
                raise DensitylabError(f"{path}: optimizer tensor {key} has {_describe(value)}, "
                                      "a number was expected")
            continue
        if value.shape != param.shape or value.dtype != param.dtype:
            raise DensitylabError(
                f"{path}: optimizer tensor {key} has {_describe(value)}, its parameter "
                f"({names[index]}) has {_describe(param)}; the checkpoint is damaged or from "
                "another model: retrain"
            )
    for index in saved.get("scalars", {}):
        if not str(index).isdigit() or int(index) >= len(params):
            raise DensitylabError(f"{path}: optimizer state refers to parameter {index}, the model has "
                                  f"{len(params)}; retrain")
