"""MAF vs IAF: training-step time and sampling time as the dimension D grows.

    python benchmarks/maf_iaf.py [--dims 2 16 64 256 784] [--transforms 5] [--threads 2]
                                 [--transform affine|spline] [--hidden W] [--quick]

Both models hold the same stack of masked autoregressive transforms (the IAF's inner stack is
loaded with the MAF's weights), on continuous D-dimensional vectors (no preprocessing). A training
step is ``-log_prob(x).mean()`` forward + backward on a batch of 64 standard-normal points (no
optimizer); sampling draws 64 points; ``log_prob`` (in ``measure``'s record, used by
``benchmarks/sampling.py``) is the forward pass alone, without gradients. MAF evaluates densities
in one MADE pass per transform and samples in D sequential steps; IAF the other way round. The
sequential direction runs with ``--method`` (default ``cached``: the masked MLP evaluated
incrementally, about one pass of arithmetic over the D steps; ``naive``: a full pass per step, so
the IAF/MAF ratio of step times grows like D and the ratio of sampling times like 1/D). Hidden
layers: two of ``min(512, max(64, 2D))`` units unless ``--hidden`` fixes the width. Everything runs
in one process; each time is the median of repeats (fewer for slow cases). ``--quick`` is a smoke
run (D = 2, 8, 16; 2 transforms; seconds on an idle CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from densitylab import build_model
from densitylab.models.flows.autoregressive import set_method
from densitylab.runtime import keep_large_allocations_in_heap


def timed(fn: Callable[[], object], repeats: int, budget_s: float) -> float:
    """Median seconds of ``fn`` over up to ``repeats`` runs (after one warm-up), stopping early once
    ``budget_s`` is spent; the warm-up's time alone if it took over three budgets (the slow cases:
    one-time costs are paid by :func:`warm_up` at the start)."""
    started = time.perf_counter()
    fn()
    warmup = time.perf_counter() - started
    if warmup > 3 * budget_s:
        return warmup
    times = []
    while len(times) < repeats and sum(times) < budget_s:
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(dim: int, args: argparse.Namespace,
            parts: tuple[str, ...] = ("step", "sample", "log_prob")) -> dict[str, float]:
    """One row: milliseconds of each of ``parts`` for MAF and IAF at dimension ``dim``, and the
    IAF/MAF ratios."""
    width = args.hidden or min(512, max(64, 2 * dim))
    config = {"n_transforms": args.transforms, "hidden_sizes": [width, width],
              "transform": args.transform}
    torch.manual_seed(0)
    maf = build_model("maf", (dim,), 0, config)
    iaf = build_model("iaf", (dim,), 0, config)
    with torch.no_grad():  # leave the identity start: random weights in every layer
        for p in maf.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    iaf.transform.inner.load_state_dict(maf.transform.state_dict())
    for model in (maf, iaf):
        set_method(model, getattr(args, "method", "cached"))
    x = torch.randn(args.batch, dim)
    generator = torch.Generator().manual_seed(0)

    def step(model):
        def run():
            model.zero_grad(set_to_none=True)
            (-model.log_prob(x).mean()).backward()
        return run

    def sample(model):
        return lambda: model.sample(args.samples, generator=generator)

    def log_prob(model):
        def run():
            with torch.no_grad():
                model.log_prob(x)
        return run

    row = {"D": dim, "hidden": width, "parameters": sum(p.numel() for p in maf.parameters())}
    runs = {"step": step, "sample": sample, "log_prob": log_prob}
    for part in parts:
        for name, model in (("maf", maf), ("iaf", iaf)):
            row[f"{name}_{part}_ms"] = 1e3 * timed(runs[part](model), args.repeats, args.budget)
        row[f"{part}_ratio"] = row[f"iaf_{part}_ms"] / row[f"maf_{part}_ms"]
    return row


def warm_up() -> None:
    """Pay torch's one-time costs (lazy imports of the first ``autograd.grad``, which IAF's
    backward pass uses, take about a second) before anything is timed."""
    for name in ("maf", "iaf"):
        model = build_model(name, (2,), 0, {"n_transforms": 1, "hidden_sizes": [8]})
        (-model.log_prob(torch.randn(4, 2)).mean()).backward()
        model.sample(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 16, 64, 256, 784])
    parser.add_argument("--transforms", type=int, default=5)
    parser.add_argument("--transform", choices=["affine", "spline"], default="affine")
    parser.add_argument("--hidden", type=int, default=None, help="fixed hidden width")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per timing, at most")
    parser.add_argument("--method", choices=["cached", "naive"], default="cached",
                        help="how the sequential direction is computed")
    parser.add_argument("--quick", action="store_true", help="smoke run: small D, 2 transforms")
    args = parser.parse_args()
    if args.quick:
        args.dims, args.transforms, args.repeats, args.budget = [2, 8, 16], 2, 2, 0.5
    torch.set_num_threads(args.threads)
    keep_large_allocations_in_heap()
    warm_up()
    print(f"MAF vs IAF, {args.transforms} {args.transform} transforms, batch {args.batch}, "
          f"{args.samples} samples, {torch.get_num_threads()} threads, {args.method} method")
    header = (f"{'D':>5} {'hidden':>6} {'params':>9} | {'MAF step':>10} {'IAF step':>10} "
              f"{'IAF/MAF':>8} | {'MAF sample':>10} {'IAF sample':>10} {'IAF/MAF':>8}")
    print(header)
    print("-" * len(header))
    for dim in args.dims:
        r = measure(dim, args, ("step", "sample"))
        print(f"{r['D']:>5} {r['hidden']:>6} {r['parameters']:>9} | {r['maf_step_ms']:>8.1f}ms "
              f"{r['iaf_step_ms']:>8.1f}ms {r['step_ratio']:>8.2f} | {r['maf_sample_ms']:>8.1f}ms "
              f"{r['iaf_sample_ms']:>8.1f}ms {r['sample_ratio']:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
