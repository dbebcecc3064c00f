"""Data-parallel training with ``torchrun``: one process per device, the same Trainer code path.

``torchrun --nproc-per-node N -m densitylab train ...`` starts N processes and describes the group
in environment variables (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``). :func:`init_from_env` joins that group (NCCL on CUDA, gloo on CPU) and gives each
process its device (``cuda:LOCAL_RANK``). The Trainer then:

- draws the same global batch on every rank and keeps the rank's slice of it (:func:`shard_batch`;
  ``--batch-size`` is the global batch);
- wraps the training loss in DistributedDataParallel, which averages gradients, so a step equals a
  single-process step on the global batch (up to float rounding);
- reduces the logged loss and the test bits/dim over ranks, and agrees on when to stop;
- writes files (config, metrics, checkpoints, samples) and shows progress on rank 0 only.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) every function here is a no-op or an identity.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from densitylab.errors import DensitylabError


def env_world_size() -> int:
    """The number of processes ``torchrun`` started (1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single-process run): the one process that writes files."""
    return rank() == 0


def init_from_env(device: torch.device, timeout_minutes: float = 30) -> torch.device:
    """Join the process group ``torchrun`` describes, if any, and return this rank's device.

    ``device`` is the run's device: on CUDA each rank takes ``cuda:LOCAL_RANK`` and the NCCL
    backend, on CPU gloo. A group that is already initialised (e.g. by a test) is used as it is.
    """
    if not is_distributed() and env_world_size() <= 1:
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DensitylabError(f"process {local_rank} on this node has no GPU of its own "
                                  f"({torch.cuda.device_count()} visible); lower --nproc-per-node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes),
                                device_id=device if device.type == "cuda" else None)
    return device


def shutdown() -> None:
    """Leave the process group (at the end of ``densitylab train``)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. a dataset download), then the other ranks."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over ranks (``value`` itself in a single process)."""
    if not is_distributed():
        return value
    reduced = value.detach().to(_collective_device(), torch.float64, copy=True)
    dist.all_reduce(reduced)
    return (reduced / world_size()).to(value.device, value.dtype)


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sums over ranks, in float64."""
    if not is_distributed():
        return values
    reduced = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(reduced)
    return reduced.tolist()


def agree_max(value: float) -> float:
    """The largest ``value`` over ranks: one number every rank then decides by (e.g. elapsed
    time against a time budget, which each process measures slightly differently)."""
    if not is_distributed():
        return value
    reduced = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
    return float(reduced.item())


def check_batch_size(batch_size: int) -> None:
    """``--batch-size`` is the global batch: it must split evenly over the processes."""
    if batch_size % world_size():
        raise DensitylabError(f"--batch-size {batch_size} is the global batch and must be divisible "
                              f"by the {world_size()} processes; use a multiple of {world_size()}")


def shard_batch(batch: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (``DistributedSampler``-like: the slices of
    the ranks are disjoint and together form the batch)."""
    if not is_distributed():
        return batch
    return batch.view(world_size(), -1, *batch.shape[1:])[rank()]


def shard(items: torch.Tensor) -> tuple[int, int]:
    """``(start, stop)`` of this rank's part of ``items`` (e.g. the test set; sizes differ by at
    most one)."""
    n, size, index = len(items), world_size(), rank()
    return index * n // size, (index + 1) * n // size


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (after data-dependent initialisation)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def all_gather_objects(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (``[value]`` in a single process)."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel (``module`` itself in a single process).

    ``static_graph``: some models own parameters the loss never reaches (WaveNet's last residual
    projection, the last vertical label embedding of a conditional Gated PixelCNN); DDP finds them
    in the first step instead of searching the autograd graph at every step. The set never changes
    and the Trainer runs a backward after every forward (also on a step it then skips).
    """
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None,
                                   static_graph=True)
