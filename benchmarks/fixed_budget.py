"""Fixed-budget benchmark: each model trains N minutes on Fashion-MNIST 8-bit, then one JSON line.

    python benchmarks/fixed_budget.py [--minutes 8] [--models pixelcnn realnvp]

Protocol (see densitylab.bench): batch 64, 2 threads, the budget counts optimizer steps only;
test bits/dim on the first 2,000 test images (flows: one seeded uniform dequantization sample per
image); train images/s; seconds to sample 64 images. Each model runs with its registered default
configuration, so the numbers describe what `densitylab train MODEL` gives a user.
"""

from __future__ import annotations

import argparse
import json

from densitylab.bench import fixed_budget

# Measured on the 2-core development machine under the same protocol (see the issue tracker).
REFERENCE = {
    "pixelcnn": ("plain PixelCNN, 62k parameters", 3.27),
    "realnvp": ("normflows RealNVP-style flow", 4.59),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--models", nargs="+", default=["pixelcnn", "realnvp"])
    parser.add_argument("--data", default="fashion-mnist")
    args = parser.parse_args()
    for model in args.models:
        result = fixed_budget(model, args.data, args.minutes)
        if model in REFERENCE:
            name, bpd = REFERENCE[model]
            result["reference"] = {"name": name, "test_bits_per_dim": bpd,
                                   "bits_per_dim_ratio": result["test_bits_per_dim"] / bpd}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
