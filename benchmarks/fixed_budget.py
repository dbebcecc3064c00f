"""Fixed-budget benchmark: each model trains N minutes on Fashion-MNIST, then one JSON line each.

    python benchmarks/fixed_budget.py [--minutes 8] [--entries gated_pixelcnn wavenet+coords]
                                      [--n-bits 1]

Protocol (see densitylab.bench): batch 64, 2 threads, the budget counts optimizer steps only;
test bits/dim on the first 2,000 test images (flows: one seeded uniform dequantization sample per
image); train images/s; seconds to sample 64 images. Each entry runs with its registered default
configuration plus the options named below, so the numbers describe what
`densitylab train MODEL [--model-opt ...]` gives a user. ``--n-bits 1`` is binarized Fashion-MNIST.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

from densitylab.bench import fixed_budget

# name -> (model, model options[, run options]). Options are explicit where a model's defaults have
# changed since an entry was measured, so each entry's command still trains what it measured. Run
# options are further RunConfig settings (precision, compile, channels_last, ema, batch_size, ...).
FULL_WIDTH = {"vertical_channels": 32, "gate_channels": 32}
ENTRIES = {
    "pixelcnn": ("pixelcnn", {"head": "softmax"}),
    "pixelcnn+mixture": ("pixelcnn", {"head": "logistic-mixture"}),
    "gated_pixelcnn": ("gated_pixelcnn", {"head": "softmax", **FULL_WIDTH}),
    "gated_pixelcnn+mixture": ("gated_pixelcnn", {"head": "logistic-mixture", **FULL_WIDTH}),
    "gated_pixelcnn+narrow_vertical": ("gated_pixelcnn", {"head": "softmax", "vertical_channels": 16,
                                                          "gate_channels": 32}),
    "gated_pixelcnn+narrow_vertical+mixture": ("gated_pixelcnn", {"vertical_channels": 16,
                                                                  "gate_channels": 32,
                                                                  "head": "logistic-mixture"}),
    "gated_pixelcnn+narrow": ("gated_pixelcnn", {"head": "softmax", "vertical_channels": 16,
                                                 "gate_channels": 16}),
    "gated_pixelcnn+narrow+mixture": ("gated_pixelcnn", {"vertical_channels": 16, "gate_channels": 16,
                                                         "head": "logistic-mixture"}),
    "wavenet_rf1024": ("wavenet", {"layers_per_block": 10}),
    "wavenet_rf1024+coords": ("wavenet", {"layers_per_block": 10, "coords": True}),
    "wavenet": ("wavenet", {}),
    "wavenet+coords": ("wavenet", {"coords": True}),
    "rnn": ("rnn", {}),
    "rnn+coords": ("rnn", {"coords": True}),
    "made": ("made", {}),
    "realnvp": ("realnvp", {}),
    "nice": ("nice", {}),
    "glow": ("glow", {}),
    "maf": ("maf", {}),
    "maf+sequential_degrees": ("maf", {"degrees": "sequential"}),
    "maf+actnorm": ("maf", {"actnorm": True}),
    "iaf": ("iaf", {}),
    "ffjord": ("ffjord", {}),
    # attempts at the next step of the frontier (each one measured, winners and losers alike)
    "pixelcnn+mixture+bf16": ("pixelcnn", {"head": "logistic-mixture"}, {"precision": "bf16"}),
    "pixelcnn+mixture+ema": ("pixelcnn", {"head": "logistic-mixture"}, {"ema": 0.999}),
    "pixelcnn+mixture+channels_last": ("pixelcnn", {"head": "logistic-mixture"},
                                       {"channels_last": True}),
    "pixelcnn+mixture+wide48": ("pixelcnn", {"head": "logistic-mixture", "hidden_channels": 48,
                                             "output_hidden": 48}),
    "pixelcnn+mixture+deep8": ("pixelcnn", {"head": "logistic-mixture", "n_residual_blocks": 8}),
    "pixelcnn+mixture+deep8+bf16": ("pixelcnn", {"head": "logistic-mixture", "n_residual_blocks": 8},
                                    {"precision": "bf16"}),
    "glow+compile+channels_last": ("glow", {}, {"compile": True, "channels_last": True}),
    "glow+channels_last": ("glow", {}, {"channels_last": True}),
    "glow+bf16": ("glow", {}, {"precision": "bf16"}),
}
FLOWS = ["nice", "realnvp", "glow", "maf"]
AUTOREGRESSIVE = ["pixelcnn", "gated_pixelcnn", "wavenet", "wavenet+coords", "rnn", "rnn+coords", "made"]

# Peer implementations measured on the 2-core development machine under the same protocol.
REFERENCE = {
    "pixelcnn": ("plain PixelCNN, 62k parameters", 3.27),
    "gated_pixelcnn": ("an existing Gated PixelCNN, 32 channels, 62 images/s", 3.41),
    "realnvp": ("normflows RealNVP-style flow", 4.59),
    "glow": ("normflows Glow, L=2, K=8, hidden 64, 154k parameters, 452 images/s", 3.73),
    "maf": ("zuko / nflows MAF, 5 transforms, hidden [512, 512], 7.3M parameters, ~860-910 images/s",
            3.78),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--entries", nargs="+", default=AUTOREGRESSIVE, choices=sorted(ENTRIES))
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--n-bits", type=int, default=None, help="1: binarized")
    parser.add_argument("--sample-count", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="override the model's default")
    parser.add_argument("--record", metavar="JSONL", help="also append each result as a row of this "
                        "results file (docs/benchmarks.md is generated from benchmarks/results/)")
    parser.add_argument("--machine", default=None, help="the machine, in words, for --record")
    args = parser.parse_args()
    for entry in args.entries:
        model, options, *rest = ENTRIES[entry]
        run_options = rest[0] if rest else {}
        result = fixed_budget(model, args.data, args.minutes, model_config=options, lr=args.lr,
                              n_bits=args.n_bits, sample_count=args.sample_count, **run_options)
        result["entry"] = entry
        if entry in REFERENCE and args.n_bits is None:
            name, bpd = REFERENCE[entry]
            result["reference"] = {"name": name, "test_bits_per_dim": bpd,
                                   "bits_per_dim_ratio": result["test_bits_per_dim"] / bpd}
        print(json.dumps(result), flush=True)
        if args.record:
            record(Path(args.record), result, run_options, args.machine)


def record(path: Path, result: dict[str, Any], run_options: dict[str, Any], machine: str | None) -> None:
    """Append ``result`` as a results-file row, with the command that reproduces it."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    samples = next((v for k, v in result.items() if k.startswith("sample_") and k.endswith("_seconds")), None)
    date = datetime.date.today().isoformat()
    slug = re.sub(r"[^a-z0-9]+", "-", f"{result['entry']}-{result['minutes']:g}min-{date}".lower())
    row = {"kind": "row", "id": slug,
           "entry": result["entry"], "model": result["model"], "minutes": result["minutes"],
           "run_options": ", ".join(f"{k}={v}" for k, v in run_options.items()) or "defaults",
           "parameters": result["parameters"], "images_per_s": round(result["train_images_per_s"], 1),
           "steps": result["steps"], "bits_per_dim": round(result["test_bits_per_dim"], 4),
           "sample_seconds": round(samples, 2) if samples is not None else None,
           "lr": result["lr"], "commit": commit, "status": "current",
           "command": f"python benchmarks/fixed_budget.py --entries {result['entry']} "
                      f"--minutes {result['minutes']:g}",
           "date": date,
           "machine": machine or f"{platform.machine()}, 2 threads, torch {torch.__version__}"}
    with path.open("a") as handle:
        handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
