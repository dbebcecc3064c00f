"""Checkpoints as safetensors files: tensors plus a small JSON header, never a pickle.

One file holds the model weights (``model.*``), the optimizer's tensors (``optim.<param>.<key>``)
and RNG states (``rng.*``). The safetensors metadata field ``densitylab`` holds a JSON header: the
model's registry name, config, image shape and levels, the training position and the optimizer's
non-tensor state. Files are written atomically, so a kill leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from densitylab.errors import DensitylabError
from densitylab.models.base import DensityModel, build_model
from densitylab.train.files import atomic_write

FORMAT_VERSION = 1


def model_header(model: DensityModel) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "model": model.registry_name,
        "model_config": model.config_dict(),
        "shape": list(model.shape),
        "levels": model.levels,
    }


def save_checkpoint(
    path: str | Path,
    model: DensityModel,
    optimizer: torch.optim.Optimizer | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    extra_header: dict[str, Any] | None = None,
) -> None:
    """Write weights (+ optimizer state, extra tensors and header fields) atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = model_header(model) | (extra_header or {})
    if optimizer is not None:
        state = optimizer.state_dict()
        scalar_state: dict[str, dict[str, Any]] = {}
        for index, entries in state["state"].items():
            for key, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalar_state.setdefault(str(index), {})[key] = value
        header["optimizer"] = {"param_groups": state["param_groups"], "scalars": scalar_state}
    for key, value in (extra_tensors or {}).items():
        tensors[key] = value.detach().cpu().contiguous()
    metadata = {"densitylab": json.dumps(header)}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and header of a checkpoint, with one-line errors for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise DensitylabError(f"checkpoint {path} not found; check the run directory")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        header = json.loads(metadata["densitylab"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError, ValueError):
        raise DensitylabError(
            f"checkpoint {path} is corrupt or not a densitylab checkpoint; use another checkpoint "
            "or retrain"
        ) from None
    if header.get("format_version") != FORMAT_VERSION:
        raise DensitylabError(f"checkpoint {path} has an unsupported format version")
    return tensors, header


def model_from_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[DensityModel, dict[str, Any]]:
    """Rebuild the model a checkpoint was written from and load its weights."""
    tensors, header = read_checkpoint(path)
    model = build_model(header["model"], tuple(header["shape"]), header["levels"],
                        header["model_config"])
    load_model_state(model, tensors)
    return model.to(device), header


def load_model_state(model: DensityModel, tensors: dict[str, torch.Tensor]) -> None:
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DensitylabError(f"checkpoint does not fit the model: {str(exc).splitlines()[0]}") from None


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], header: dict[str, Any]
) -> None:
    saved = header["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, scalars in saved["scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
