"""Effective training FLOP/s of each model as a fraction of this machine's matrix-multiply peak.

    python benchmarks/flops.py [--models pixelcnn gated_pixelcnn wavenet realnvp glow]
                               [--batch 64] [--threads 2] [--steps 10]

In one process: (1) the fp32 throughput of ``torch.mm`` on 2048x2048 matrices (the machine's
practical peak); (2) for each model with its default configuration on 28x28 8-bit images, the
FLOPs of one training step (``-log_prob(x).mean()`` forward + backward, as the Trainer computes it,
plus the Adam update, which is negligible) counted by ``torch.utils.flop_counter.FlopCounterMode``
(it counts matrix products and convolutions: the work that can run at matrix-multiply speed), and
the median wall time of ``--steps`` real optimizer steps after warm-up. The printed fraction is
``FLOPs / step time / mm peak``: how much of the machine the step uses. The gap is elementwise work
(activations, gates, masks, log-softmax), memory traffic, and framework overhead per operator.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from densitylab import build_model
from densitylab.runtime import keep_large_allocations_in_heap


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


def measure(name: str, batch: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(name, (1, 28, 28), 256, {})
    x = torch.randint(0, 256, (batch, 1, 28, 28))
    model.initialize_from_data(x)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    step = training_step(model, optimizer, x)
    step()  # warm-up (and data-dependent initialisation)
    with FlopCounterMode(display=False) as counter:
        step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    flops = counter.get_total_flops()
    return {"flops": flops, "seconds": seconds, "flop_s": flops / seconds,
            "images_s": batch / seconds, "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+",
                        default=["pixelcnn", "gated_pixelcnn", "wavenet", "realnvp", "glow"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_large_allocations_in_heap()
    peak = mm_peak()
    print(f"torch.mm 2048x2048 fp32, {torch.get_num_threads()} threads: {peak / 1e9:.1f} GFLOP/s")
    header = (f"{'model':<16} {'params':>8} | {'GFLOP/step':>10} {'step ms':>8} {'img/s':>7} | "
              f"{'GFLOP/s':>8} {'of mm peak':>10}")
    print(header)
    print("-" * len(header))
    for name in args.models:
        r = measure(name, args.batch, args.steps)
        print(f"{name:<16} {r['parameters']:>8} | {r['flops'] / 1e9:>10.2f} {1e3 * r['seconds']:>8.1f} "
              f"{r['images_s']:>7.0f} | {r['flop_s'] / 1e9:>8.1f} {r['flop_s'] / peak:>9.1%}", flush=True)


if __name__ == "__main__":
    main()
