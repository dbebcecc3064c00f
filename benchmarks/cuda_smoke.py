"""CUDA smoke check: every registered model trains a few dozen steps on the GPU through the same
Trainer as on a CPU, is evaluated, samples, and its log_prob on the GPU matches the CPU's.

    python benchmarks/cuda_smoke.py [--steps 30]

Images: sklearn's 8x8 digits (17 levels); flows that take vectors also train on the 2D moons.
Prints one JSON line per run and a summary; exits non-zero if any model fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from densitylab.config import RunConfig
from densitylab.models.registry import available_models
from densitylab.train.trainer import Trainer


def run(model: str, data: str, steps: int, out: Path) -> dict:
    config = RunConfig(model=model, data=data, device="cuda", batch_size=64, epochs=1.0,
                       time_budget=None, eval_every=10**9, checkpoint_every=10**9, sample_count=16)
    trainer = Trainer(config, out, force=True, progress=False)
    trainer.total_steps = steps
    torch.cuda.synchronize()
    started = time.perf_counter()
    trainer.train_loop()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    results = trainer.finish()
    # the same parameters on the CPU give the same log_prob (float64 on both)
    x = trainer.data.test[:32].to("cuda")
    x = x if trainer.data.continuous else x.long()
    gpu_model = trainer.model.double().eval()
    gpu = gpu_model.log_prob(x, generator=torch.Generator().manual_seed(0)).cpu()
    cpu = gpu_model.cpu().log_prob(x.cpu(), generator=torch.Generator().manual_seed(0))
    return {"model": model, "data": data, "steps": trainer.state.step,
            "seconds_per_step": seconds / max(trainer.state.step, 1),
            "score": results.get("test_bits_per_dim", results.get("test_nats_per_dim")),
            "unit": results["unit"], "cpu_gpu_max_abs_diff": float((gpu - cpu).abs().max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__}))
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, info in sorted(available_models().items()):
            datasets = ["digits"] if "image" in info.data_kinds else []
            if "continuous" in info.data_kinds:
                datasets.append("moons")
            for data in datasets:
                try:
                    record = run(name, data, args.steps, Path(tmp) / f"{name}-{data}")
                except Exception as exc:  # noqa: BLE001 - report every failure, then exit non-zero
                    record = {"model": name, "data": data, "error": repr(exc)[:300]}
                    traceback.print_exc()
                    failures.append(f"{name}/{data}")
                print(json.dumps(record), flush=True)
    print(json.dumps({"failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
