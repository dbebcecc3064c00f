"""Naive vs cached sampling of the convolutional autoregressive models, and MAF vs IAF sampling.

    python benchmarks/sampling.py [--models pixelcnn gated_pixelcnn wavenet] [--batches 1 16 64]
                                  [--size 28] [--threads 2] [--dims 16 64 256 784] [--quick]

For each model (the fixed-budget benchmark's default sizes, 256 levels, random weights: the time
does not depend on them) and batch size, one 28x28 batch is drawn with ``method="naive"`` (the
whole network once per pixel: 784 full passes) and with ``method="cached"`` (only the activations
the next pixel needs) from the same seed; the script prints seconds per batch, the speedup, and
whether both methods drew the same images (in float32 a draw whose uniform number lies within
rounding, ~1e-7, of a CDF boundary can go either way; the ``flips`` section counts such draws by
replaying the cached images teacher-forced, and shows they are rounding). Cached times are the
median of a few repeats, naive times one run (up to a few minutes). Then MAF vs IAF (5 affine
transforms, as in ``benchmarks/maf_iaf.py``): sampling and ``log_prob`` time for each D — MAF samples in D
sequential steps per transform and evaluates in one pass, IAF the other way round. Then the masked
MLP naive vs cached (``masked``): MADE sampling (28x28, 256 levels), MAF sampling and IAF
``log_prob`` (5 transforms of MADE 512-512, affine and spline) at D = 784 and batch 64, each
sequential step computed by a full pass (naive, one run) or incrementally (cached, median of 3),
with the ratio and the largest difference between the two results. ``--quick`` is a smoke run
(12x12 images, batches 1 and 4, D = 16).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from maf_iaf import measure, warm_up

from densitylab import build_model
from densitylab.models.flows.autoregressive import set_method
from densitylab.runtime import keep_large_allocations_in_heap


def time_sampling(model, n: int, method: str, repeats: int) -> tuple[float, torch.Tensor]:
    """(median seconds over ``repeats`` draws of ``n`` images, the images of the last draw)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        images = model.sample(n, generator=torch.Generator().manual_seed(0), method=method)
        times.append(time.perf_counter() - started)
    return statistics.median(times), images


def autoregressive_rows(args: argparse.Namespace) -> None:
    print(f"\nnaive vs cached sampling, {args.size}x{args.size}, 256 levels, "
          f"{torch.get_num_threads()} threads")
    header = (f"{'model':<16} {'params':>8} {'batch':>5} | {'naive s':>9} {'cached s':>9} "
              f"{'speedup':>8} | same images")
    print(header)
    print("-" * len(header))
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, (1, args.size, args.size), 256, {}).eval()
        params = sum(p.numel() for p in model.parameters())
        model.sample(1, method="cached")  # warm-up
        for batch in args.batches:
            cached_s, cached = time_sampling(model, batch, "cached", 3)
            naive_s, naive = time_sampling(model, batch, "naive", 1)
            same = "yes" if torch.equal(cached, naive) else "NO"
            print(f"{name:<16} {params:>8} {batch:>5} | {naive_s:>9.2f} {cached_s:>9.3f} "
                  f"{naive_s / cached_s:>7.1f}x | {same}", flush=True)


@torch.no_grad()
def differing_draws(model, n: int) -> tuple[int, float, float]:
    """Where the two methods part, found cheaply: draw ``n`` images with the cached sampler, then
    replay every step teacher-forced on them — the naive parameters of all steps come from one full
    pass over the finished images (the network is causal), the uniform numbers from the same seed —
    and count the draws the naive parameters would have made differently. Returns (that count,
    the largest |cached - naive| parameter difference, the smallest distance from a differing
    draw's uniform number to the CDF boundary it fell on the other side of)."""
    images = model.sample(n, generator=torch.Generator().manual_seed(0), method="cached")
    naive = model.params_from_input(model.scale_input(images))
    cached = model.cached_sampler(model, images.clone(), None)
    generator, differ, largest, closest = torch.Generator().manual_seed(0), 0, 0.0, 1.0
    channels, height, width = model.shape
    for i in range(height):
        for j in range(width):
            for c in range(channels):
                u = torch.rand(n, 1, generator=generator)
                params = naive[:, c, :, i, j]
                largest = max(largest, (cached.params(c, i, j) - params).abs().max().item())
                cdf = torch.softmax(model.head.level_logits(params).float(), -1).cumsum(-1)
                drawn = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1)
                wrong = drawn.clamp(max=cdf.shape[-1] - 1) != images[:, c, i, j]
                differ += int(wrong.sum())
                if wrong.any():
                    closest = min(closest, (cdf[wrong] - u[wrong] * cdf[wrong, -1:]).abs().min().item())
    return differ, largest, closest


def flip_rows(args: argparse.Namespace) -> None:
    print(f"\nwhy images can differ in float32: {args.batches[-1]} images, teacher-forced replay")
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, (1, args.size, args.size), 256, {}).eval()
        n = args.batches[-1]
        differ, largest, closest = differing_draws(model, n)
        where = f"; nearest boundary {closest:.1e} away" if differ else ""
        print(f"{name:<16} max |cached - naive| parameter {largest:.1e}; {differ} of {n * model.dim:,} "
              f"draws would differ{where}", flush=True)


def flow_rows(args: argparse.Namespace) -> None:
    flow_args = argparse.Namespace(hidden=None, transforms=5, transform="affine", batch=64,
                                   samples=64, repeats=3, budget=3.0)
    warm_up()
    print("\nMAF vs IAF: 64 samples / log_prob of 64 points, 5 affine transforms")
    header = (f"{'D':>5} | {'MAF sample':>10} {'IAF sample':>10} {'MAF/IAF':>8} | "
              f"{'MAF log_prob':>12} {'IAF log_prob':>12} {'IAF/MAF':>8}")
    print(header)
    print("-" * len(header))
    for dim in args.dims:
        r = measure(dim, flow_args, ("sample", "log_prob"))
        print(f"{dim:>5} | {r['maf_sample_ms']:>8.1f}ms {r['iaf_sample_ms']:>8.1f}ms "
              f"{1 / r['sample_ratio']:>8.1f} | {r['maf_log_prob_ms']:>10.1f}ms "
              f"{r['iaf_log_prob_ms']:>10.1f}ms {r['log_prob_ratio']:>8.1f}", flush=True)


def naive_and_cached(model, run) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """(naive seconds, cached seconds, naive result, cached result) of ``run()``; the slow naive
    method runs once, the cached one is the median of three."""
    set_method(model, "naive")
    started = time.perf_counter()
    naive = run()
    naive_s = time.perf_counter() - started
    set_method(model, "cached")
    cached_s, cached = [], None
    for _ in range(3):
        started = time.perf_counter()
        cached = run()
        cached_s.append(time.perf_counter() - started)
    return naive_s, statistics.median(cached_s), naive, cached


@torch.no_grad()
def masked_rows(args: argparse.Namespace) -> None:
    batch = args.batches[-1]
    print(f"\nmasked MLP, naive vs cached: batch {batch}, {torch.get_num_threads()} threads")
    header = f"{'what':<24} {'D':>5} | {'naive s':>9} {'cached s':>9} {'ratio':>8} | max |difference|"
    print(header)
    print("-" * len(header))
    for kind in [k for k in ("affine", "spline") if k in args.masked]:
        for dim in args.masked_dims:
            torch.manual_seed(0)
            config = {"transform": kind}
            maf, iaf = build_model("maf", (dim,), 0, config), build_model("iaf", (dim,), 0, config)
            for p in maf.parameters():  # leave the identity start: random weights in every layer
                p.add_(torch.randn_like(p) * 0.01)
            iaf.transform.inner.load_state_dict(maf.transform.state_dict())
            x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(1))
            for what, model, run in (
                    (f"MAF sample, {kind}", maf,
                     lambda m=maf: m.sample(batch, generator=torch.Generator().manual_seed(0))),
                    (f"IAF log_prob, {kind}", iaf, lambda m=iaf, x=x: m.log_prob(x))):
                naive_s, cached_s, naive, cached = naive_and_cached(model, run)
                print(f"{what:<24} {dim:>5} | {naive_s:>9.2f} {cached_s:>9.3f} {naive_s / cached_s:>7.1f}x | "
                      f"{(naive - cached).abs().max().item():.1e}", flush=True)
    if "made" not in args.masked:
        return
    torch.manual_seed(0)
    made = build_model("made", (1, args.size, args.size), 256, {}).eval()
    made.output_weight().normal_(0, 0.3)  # leave the zero start of the output layer
    times = {}
    for method in ("naive", "cached"):
        started = time.perf_counter()
        times[method] = made.sample(batch, generator=torch.Generator().manual_seed(0), method=method)
        times[method + "_s"] = time.perf_counter() - started
    same = "same images" if torch.equal(times["naive"], times["cached"]) else "images DIFFER"
    print(f"{'MADE sample':<24} {made.dim:>5} | {times['naive_s']:>9.2f} {times['cached_s']:>9.3f} "
          f"{times['naive_s'] / times['cached_s']:>7.1f}x | {same}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["pixelcnn", "gated_pixelcnn", "wavenet"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 64, 256, 784])
    parser.add_argument("--masked-dims", type=int, nargs="+", default=[784])
    parser.add_argument("--masked", nargs="+", choices=["affine", "spline", "made"],
                        default=["affine", "spline", "made"], help="rows of the masked section")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["timing", "flips", "flows", "masked"], help="run one section")
    args = parser.parse_args()
    if args.quick:
        args.size, args.batches, args.dims, args.masked_dims = 12, [1, 4], [16], [16]
    torch.set_num_threads(args.threads)
    keep_large_allocations_in_heap()
    sections = {"timing": autoregressive_rows, "flips": flip_rows, "flows": flow_rows,
                "masked": masked_rows}
    for name, section in sections.items():
        if args.only in (None, name):
            section(args)


if __name__ == "__main__":
    main()
