"""Checkpoints as safetensors files: tensors plus a small JSON header, never a pickle.

One file holds the model weights (``model.*``), the optimizer's tensors (``optim.<param>.<key>``)
and RNG states (``rng.*``). The safetensors metadata field ``densitylab`` holds a JSON header: the
model's registry name, config, image shape and levels, the dataset it was trained on, the
training position and the optimizer's non-tensor state.

Integrity: the metadata field ``densitylab.sha256`` holds the sha256 of the header and of every
tensor (its dtype, shape and bytes), written at save and verified at every load, so a damaged
file is refused (naming it, and saying whether the run's other copy of the weights is intact)
instead of being trained on or scored. Files are written atomically, so a kill leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from densitylab.errors import DensitylabError
from densitylab.models.base import DensityModel
from densitylab.models.registry import build_model
from densitylab.train import rundir
from densitylab.train.files import atomic_write_bytes
from densitylab.train.validation import check_model_tensors, check_optimizer_state

FORMAT_VERSION = 2  # 2: per-tensor checksums
HEADER_KEY = "densitylab"
CHECKSUM_KEY = "densitylab.sha256"


class CorruptCheckpointError(DensitylabError):
    """A checkpoint file that cannot be read back as written."""


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes."""
    tensor = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{tensor.dtype}:{tuple(tensor.shape)}:".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def model_header(model: DensityModel) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "model": model.registry_name,
        "model_config": model.config_dict(),
        "shape": list(model.shape),
        "levels": model.levels,
    }


def dataset_header(name: str, shape: tuple[int, ...], levels: int) -> dict[str, Any]:
    """The header field naming the data a model was trained on (``header["dataset"]``)."""
    return {"dataset": {"name": name, "shape": list(shape), "levels": levels}}


def write_checkpoint_file(path: str | Path, tensors: dict[str, torch.Tensor],
                          header: dict[str, Any]) -> None:
    """Write ``tensors`` and ``header`` (with their checksums) atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header_text = json.dumps(header)
    sums = {"header": hashlib.sha256(header_text.encode()).hexdigest(),
            "tensors": {k: tensor_digest(v) for k, v in tensors.items()}}
    metadata = {HEADER_KEY: header_text, CHECKSUM_KEY: json.dumps(sums)}
    atomic_write_bytes(Path(path), save_bytes(tensors, metadata=metadata))


def save_checkpoint(
    path: str | Path,
    model: DensityModel,
    optimizer: torch.optim.Optimizer | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    extra_header: dict[str, Any] | None = None,
) -> None:
    """Write weights (+ optimizer state, extra tensors and header fields) atomically."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    header = model_header(model) | (extra_header or {})
    if optimizer is not None:
        state = optimizer.state_dict()
        scalar_state: dict[str, dict[str, Any]] = {}
        for index, entries in state["state"].items():
            for key, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{index}.{key}"] = value
                else:
                    scalar_state.setdefault(str(index), {})[key] = value
        header["optimizer"] = {"param_groups": state["param_groups"], "scalars": scalar_state}
    tensors |= extra_tensors or {}
    write_checkpoint_file(path, tensors, header)


def _parse(path: Path, data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and header of a file's bytes; raises ``ValueError(reason)`` when they are damaged."""
    if len(data) < 8:
        raise ValueError("the file is truncated inside its header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("the file is truncated, or its header length is damaged")
    try:
        metadata = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise ValueError("its safetensors header is damaged") from None
    try:
        tensors = load_bytes(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as exc:
        raise ValueError(f"safetensors cannot read it: {str(exc).splitlines()[0][:120]}") from None
    if HEADER_KEY not in metadata:
        raise ValueError("it holds no densitylab header; it is not a densitylab checkpoint")
    if CHECKSUM_KEY not in metadata:
        raise ValueError("it holds no checksums (damaged, or written by an older densitylab)")
    try:
        sums = json.loads(metadata[CHECKSUM_KEY])
        header_sum, tensor_sums = sums["header"], sums["tensors"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError("its checksum record is damaged") from None
    header_text = metadata[HEADER_KEY]
    if hashlib.sha256(header_text.encode()).hexdigest() != header_sum:
        raise ValueError("the checksum of its header does not match")
    if set(tensor_sums) != set(tensors):
        raise ValueError("its tensors are not the ones its checksums were written for")
    for name, tensor in tensors.items():
        if tensor_digest(tensor) != tensor_sums[name]:
            raise ValueError(f"the checksum of tensor {name} does not match")
    header = json.loads(header_text)
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported format version {header.get('format_version')!r}")
    return tensors, header


def _verified(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | str:
    """Tensors and header, or the reason the file cannot be used."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    try:
        return _parse(path, data)
    except ValueError as exc:
        return str(exc)


def other_copy_note(path: Path) -> str:
    """What the run's other weights file (model <-> checkpoint) offers when ``path`` is damaged."""
    other = rundir.other_copy(path)
    if other is None:
        return "use another copy or retrain"
    if not other.is_file():
        return f"there is no other copy ({other.name} does not exist): retrain with --force"
    if isinstance(_verified(other), str):
        return f"{other.name} is corrupt too: retrain with --force"
    if other.name == rundir.MODEL_FILE:
        return (f"{other} is intact: eval and sample use it, but the run cannot be resumed; "
                "retrain with --force to continue training")
    return (f"{other} is intact: 'densitylab train --resume {path.parent}' rewrites {path.name} "
            f"from it, and eval and sample accept {other}")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and header of a checkpoint, verified against its checksums; one-line errors for
    missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise DensitylabError(f"checkpoint {path} not found; check the run directory")
    result = _verified(path)
    if isinstance(result, str):
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt: {result}; {other_copy_note(path)}")
    return result


def model_from_checkpoint(
    path: str | Path, device: str | torch.device = "cpu",
    config_overrides: dict[str, Any] | None = None,
) -> tuple[DensityModel, dict[str, Any]]:
    """Rebuild the model a checkpoint was written from, with its weights, in eval mode.

    ``path`` is a checkpoint file or a run directory (its ``model.safetensors``, else its
    ``checkpoint.safetensors``). ``config_overrides`` replace saved model options that hold no
    weights (e.g. FFJORD's ODE solver and tolerances, to score a model trained with a cheap
    solver by an accurate one); an override that changes the weights' shapes is refused like any
    mismatched checkpoint. Returns the model and the header (``header["dataset"]``: the name,
    shape and levels of the data it was trained on)."""
    path = rundir.model_file(path)
    tensors, header = read_checkpoint(path)
    try:
        model = build_model(header["model"], tuple(header["shape"]), header["levels"],
                            header["model_config"] | (config_overrides or {}))
    except (KeyError, TypeError) as exc:
        raise DensitylabError(f"{path} has no usable model description ({exc}); retrain") from None
    floats = {v.dtype for k, v in tensors.items() if k.startswith("model.") and v.is_floating_point()}
    if len(floats) == 1:  # weights saved from a model in another precision (e.g. .double())
        model = model.to(floats.pop())
    load_model_state(model, tensors, path)
    return model.to(device).eval(), header


def load_model_state(model: DensityModel, tensors: dict[str, torch.Tensor],
                     path: str | Path = "checkpoint") -> None:
    """Load the ``model.*`` tensors into ``model`` after checking their names, shapes and dtypes."""
    check_model_tensors(model, tensors, path)
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(state)


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], header: dict[str, Any],
    path: str | Path = "checkpoint", names: list[str] | None = None,
) -> None:
    """Load the optimizer state after checking it against the optimizer's parameters."""
    if not isinstance(header.get("optimizer"), dict):
        raise DensitylabError(f"{path} holds no optimizer state")
    check_optimizer_state(optimizer, tensors, header, path, names)
    saved = header["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, scalars in saved["scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise DensitylabError(f"{path}: the optimizer state does not fit the model "
                              f"({str(exc).splitlines()[0]}); retrain") from None
    match_parameter_layouts(optimizer)


def match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor its parameter's memory layout (files hold contiguous
    tensors; a fused optimizer reads a channels-last parameter and its moments element by element
    in memory order, so they must agree)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    optimizer.state[param][key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
