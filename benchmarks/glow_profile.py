"""Where a Glow training step spends its time: densitylab's Glow against normflows' at equal size.

    .peers-venv/bin/python benchmarks/glow_profile.py [--steps 60] [--threads 2] [--record]

Both Glows are built exactly as in ``benchmarks/peers.py`` (L=2, K=8, hidden 64, 1 x 28 x 28,
Fashion-MNIST 8-bit, the same dequantization and logit preprocessing) and trained by the same
step (batch 64, the bits/dim loss, gradient clipping, fused Adam). After warm-up steps the two
take turns in blocks of ``--block`` steps until each has run ``--steps``, so that a drift of the
machine's speed falls on both; the script prints each one's training images/s and the ratio
densitylab / normflows. Then ``torch.profiler`` records ``--profile-steps`` steps of each, and the
script prints the self CPU time per step by operator kind (convolutions forward, convolution
gradients, element-wise, reductions, the optimizer, small linear algebra such as the 1x1
convolutions' LU, the rest) and the top operators. ``--record`` appends the result as a row of
``benchmarks/results/glow-profile.jsonl`` (docs/benchmarks.md is generated from it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (the benchmark's own module, beside this file)

from densitylab.data import load_dataset  # noqa: E402
from densitylab.models.flows.transforms import DEFAULT_LOGIT_ALPHA, LogitTransform  # noqa: E402
from densitylab.runtime import keep_large_allocations_in_heap  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "glow-profile.jsonl"
ENTRIES = ("densitylab-glow", "normflows-glow")
KINDS = (  # (kind, substrings of an aten operator's name), first match wins
    ("convolution gradients", ("convolution_backward",)),
    ("convolutions", ("convolution", "conv2d", "mkldnn_conv")),
    ("optimizer", ("_fused_adam", "adam")),
    ("small linear algebra", ("linalg", "lu", "slogdet", "inverse", "triangular", "det", "mm")),
    ("reductions", ("sum", "mean", "norm", "logsumexp", "max", "min")),
    ("element-wise", ("mul", "add", "sub", "div", "exp", "log", "sigmoid", "tanh", "pow", "neg",
                      "where", "copy", "fill", "clamp", "sqrt", "abs", "cat", "stack", "rsub")),
)


class Stepper:
    """One training step of an entry: the loop of ``peers.train`` without its budget."""

    def __init__(self, name: str, images: torch.Tensor, batch: int, compile_loss: bool = False,
                 channels_last: bool = False) -> None:
        entry = peers.ENTRIES[name]
        torch.manual_seed(peers.SEED)
        self.built = entry.build(LogitTransform(DEFAULT_LOGIT_ALPHA))
        self.built.initialize(images[: peers.INIT_IMAGES])
        self.log_prob = self.built.log_prob
        if channels_last:  # as densitylab's Trainer does with channels_last
            self.built.module.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        if compile_loss:
            self.log_prob = torch.compile(self.built.log_prob)
        self.params = [p for p in self.built.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=entry.lr, fused=True)
        self.order = peers.BatchOrder(len(images), batch)
        self.noise = torch.Generator().manual_seed(peers.SEED + 1)
        self.images, self.seconds, self.steps, self.batch = images, 0.0, 0, batch
        self.built.module.train()

    def step(self) -> None:
        started = time.perf_counter()
        x = self.images[self.order.next()].long()
        loss = -self.log_prob(x, self.noise).mean() / (peers.DIM * math.log(2))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, peers.GRAD_CLIP)
        self.optimizer.step()
        self.seconds += time.perf_counter() - started
        self.steps += 1

    @property
    def images_per_s(self) -> float:
        return self.steps * self.batch / self.seconds


def slug(kind: str) -> str:
    return kind.replace(" ", "_").replace("-", "_")


def kind_of(op: str) -> str:
    name = op.lower()
    for kind, keys in KINDS:
        if any(key in name for key in keys):
            return kind
    return "other"


def profile_steps(stepper: Stepper, steps: int, top: int) -> dict[str, object]:
    """Self CPU milliseconds per step by operator kind, and the ``top`` operators."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            stepper.step()
    by_op: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        by_op[event.key] += event.self_cpu_time_total / 1e3 / steps  # microseconds -> ms per step
    by_kind: dict[str, float] = defaultdict(float)
    for op, ms in by_op.items():
        by_kind[kind_of(op)] += ms
    total = sum(by_op.values())
    ranked = sorted(by_op.items(), key=lambda item: -item[1])[:top]
    return {"ms_per_step": round(total, 2),
            "by_kind": {k: round(v, 2) for k, v in sorted(by_kind.items(), key=lambda i: -i[1])},
            "top_ops": [[op, round(ms, 2)] for op, ms in ranked]}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per entry")
    parser.add_argument("--block", type=int, default=10, help="steps per turn")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per entry first")
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--compile", action="store_true", help="torch.compile densitylab's loss "
                        "(the Trainer's --compile); its compilation happens in the warm-up")
    parser.add_argument("--channels-last", action="store_true",
                        help="densitylab's Glow in the NHWC layout (the Trainer's --channels-last)")
    parser.add_argument("--peer-too", action="store_true",
                        help="apply --compile / --channels-last to normflows' Glow as well")
    parser.add_argument("--record", action="store_true", help=f"append a row to {RESULTS.name}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_large_allocations_in_heap()
    images = load_dataset("fashion-mnist").train
    steppers = {name: Stepper(name, images, args.batch, args.compile and (
        name == "densitylab-glow" or args.peer_too), args.channels_last and (
        name == "densitylab-glow" or args.peer_too)) for name in ENTRIES}
    for stepper in steppers.values():
        for _ in range(args.warmup):
            stepper.step()
        stepper.seconds, stepper.steps = 0.0, 0
    while any(s.steps < args.steps for s in steppers.values()):
        for stepper in steppers.values():
            for _ in range(min(args.block, args.steps - stepper.steps)):
                stepper.step()
    speeds = {name: s.images_per_s for name, s in steppers.items()}
    ratio = speeds["densitylab-glow"] / speeds["normflows-glow"]
    profiles = {name: profile_steps(s, args.profile_steps, args.top) for name, s in steppers.items()}
    params = {name: sum(p.numel() for p in s.params) for name, s in steppers.items()}
    for name in ENTRIES:
        print(f"{name}: {speeds[name]:.0f} train images/s, {params[name]:,} parameters, "
              f"{profiles[name]['ms_per_step']:.1f} ms/step profiled")
        for kind, ms in profiles[name]["by_kind"].items():
            print(f"    {kind:24s} {ms:8.2f} ms/step")
    print(f"ratio densitylab / normflows: {ratio:.3f} (images/s)")
    for name in ENTRIES:
        print(f"top operators of {name} (self CPU ms per step):")
        for op, ms in profiles[name]["top_ops"]:
            print(f"    {op:40s} {ms:8.2f}")
    tuned = [flag for flag, on in (("compile", args.compile), ("channels last", args.channels_last))
             if on]
    applied = "both" if args.peer_too else "densitylab only"
    count = sum(1 for line in RESULTS.read_text().splitlines() if '"kind": "row"' in line) \
        if RESULTS.is_file() else 0
    row = {"kind": "row", "id": f"glow-profile-{count + 1}", "entry": "glow L=2, K=8, hidden 64"
           + (f", {' + '.join(tuned)} ({applied})" if tuned else ", eager"), "threads": args.threads,
           "steps": args.steps, "densitylab_images_per_s": round(speeds["densitylab-glow"], 1),
           "normflows_images_per_s": round(speeds["normflows-glow"], 1), "ratio": round(ratio, 3),
           "densitylab_parameters": params["densitylab-glow"],
           "normflows_parameters": params["normflows-glow"],
           **{f"{name.split('-')[0]}_{slug(kind)}_ms": profiles[name]["by_kind"].get(kind, 0.0)
              for name in ENTRIES for kind in [k for k, _ in KINDS] + ["other"]},
           "profiles": profiles, "commit": commit(), "status": "current",
           "command": "python benchmarks/glow_profile.py " + " ".join(sys.argv[1:]),
           "date": datetime.date.today().isoformat(),
           "machine": f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}"}
    print(json.dumps(row))
    if args.record:
        with RESULTS.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
