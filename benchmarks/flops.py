"""Effective training FLOP/s of each model as a fraction of this machine's matrix-multiply peak.

    python benchmarks/flops.py [--models pixelcnn gated_pixelcnn wavenet realnvp glow]
                               [--batch 64] [--threads 2] [--steps 10] [--model-opt KEY=VALUE]

In one process: (1) the fp32 throughput of ``torch.mm`` on 2048x2048 matrices (the machine's
practical peak), measured again before each model; (2) for each model with its default
configuration (or ``--model-opt`` changes) on 28x28 8-bit images, the FLOPs of one training
step (``-log_prob(x).mean()`` forward + backward, as the Trainer computes it, plus the Adam update,
which is negligible) counted by ``torch.utils.flop_counter.FlopCounterMode`` (it counts matrix
products and convolutions: the work that can run at matrix-multiply speed), and the median wall
time of ``--steps`` real optimizer steps after warm-up. The printed fraction is
``FLOPs / step time / mm peak``: how much of the machine the step uses. The gap is elementwise work
(activations, gates, masks, log-softmax), memory traffic, and framework overhead per operator.

(3) The ceiling set by the matrix products themselves: every convolution and matrix product of the
step's forward pass is recorded (shapes, memory layouts, which inputs need gradients) and replayed
alone, forward and backward, on fresh tensors. ``alone`` is their FLOPs over the sum of their
isolated times, as a fraction of the mm peak: what the step would reach if everything else took no
time at all. ``share`` is the fraction of the step's time those products take when replayed alone.
A narrow convolution (32 channels over a 64x28x28 batch) streams far more bytes per FLOP than a
2048x2048 product, so its own ceiling sits well below the mm peak.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from densitylab import build_model
from densitylab.cli import parse_model_options
from densitylab.runtime import keep_large_allocations_in_heap

aten = torch.ops.aten
MATRIX_OPS = (aten.convolution.default, aten.mm.default, aten.addmm.default, aten.bmm.default)


def mm_peak(size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of ``torch.mm`` on ``size x size`` fp32 matrices (median of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times)


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor):
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        (-model.log_prob(x, generator=torch.Generator().manual_seed(0)).mean()).backward()
        optimizer.step()
    return step


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class TensorSpec(NamedTuple):
    """What a replay needs of a recorded tensor argument."""

    size: torch.Size
    stride: tuple[int, ...]
    requires_grad: bool

    def fresh(self) -> torch.Tensor:
        """Random values laid out like the recorded tensor (broadcast views, stride 0, contiguous)."""
        if 0 in self.stride:
            return torch.randn(self.size).requires_grad_(self.requires_grad)
        return torch.empty_strided(self.size, self.stride).normal_().requires_grad_(self.requires_grad)


class RecordMatrixOps(TorchDispatchMode):
    """Records each convolution and matrix product that runs under it: the op, and for every
    tensor argument its size, strides and whether it needs a gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple[Any, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in MATRIX_OPS:
            self.calls.append((func, tuple(
                TensorSpec(a.size(), a.stride(), a.requires_grad) if isinstance(a, torch.Tensor) else a
                for a in args)))
        return func(*args, **(kwargs or {}))


def replay_alone(calls: list[tuple[Any, tuple[Any, ...]]], repeats: int) -> tuple[float, float]:
    """FLOPs and summed median seconds of each recorded op run alone, forward and backward."""
    total_flops, total_seconds = 0, 0.0
    for func, specs in calls:
        args = [spec.fresh() if isinstance(spec, TensorSpec) else spec for spec in specs]

        def forward_backward(func=func, args=args) -> None:
            out = func(*args)
            if out.requires_grad:
                out.backward(torch.ones_like(out))
            for a in args:
                if isinstance(a, torch.Tensor):
                    a.grad = None

        with FlopCounterMode(display=False) as counter:
            forward_backward()
        total_flops += counter.get_total_flops()
        total_seconds += median_seconds(forward_backward, repeats)
    return total_flops, total_seconds


def measure(name: str, batch: int, steps: int, options: dict[str, Any]) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(name, (1, 28, 28), 256, options)
    x = torch.randint(0, 256, (batch, 1, 28, 28))
    model.initialize_from_data(x)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = training_step(model, optimizer, x)
    step()  # warm-up (and data-dependent initialisation)
    with FlopCounterMode(display=False) as counter:
        step()
    seconds = median_seconds(step, steps)
    flops = counter.get_total_flops()
    recorder = RecordMatrixOps()
    with recorder:
        model.log_prob(x, generator=torch.Generator().manual_seed(0))
    alone_flops, alone_seconds = replay_alone(recorder.calls, steps)
    return {"flops": flops, "seconds": seconds, "flop_s": flops / seconds,
            "images_s": batch / seconds, "parameters": sum(p.numel() for p in model.parameters()),
            "alone_flop_s": alone_flops / alone_seconds, "alone_share": alone_seconds / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+",
                        default=["pixelcnn", "gated_pixelcnn", "wavenet", "realnvp", "glow"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="a model option for every model listed (e.g. hidden_channels=128)")
    args = parser.parse_args()
    options = parse_model_options(args.model_opt)
    torch.set_num_threads(args.threads)
    keep_large_allocations_in_heap()
    print(f"torch.mm 2048x2048 fp32, {torch.get_num_threads()} threads, measured before each model "
          "(this machine's speed drifts)")
    header = (f"{'model':<16} {'params':>8} | {'GFLOP/step':>10} {'step ms':>8} {'img/s':>7} | "
              f"{'mm peak':>7} {'GFLOP/s':>8} {'of mm peak':>10} | {'alone':>6} {'share':>6}")
    print(header)
    print("-" * len(header))
    for name in args.models:
        peak = mm_peak()
        r = measure(name, args.batch, args.steps, options)
        print(f"{name:<16} {r['parameters']:>8} | {r['flops'] / 1e9:>10.2f} {1e3 * r['seconds']:>8.1f} "
              f"{r['images_s']:>7.0f} | {peak / 1e9:>7.1f} {r['flop_s'] / 1e9:>8.1f} "
              f"{r['flop_s'] / peak:>10.1%} | {r['alone_flop_s'] / peak:>6.1%} {r['alone_share']:>6.1%}",
              flush=True)


if __name__ == "__main__":
    main()
