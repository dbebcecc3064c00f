"""Fixed-budget benchmark: train for N minutes, then report one JSON record.

Protocol (the same for every model): the data's native levels (8-bit for Fashion-MNIST), batch 64,
2 threads, the time budget counts optimizer steps
only; then test bits/dim on the first 2,000 test images (flows: one fixed, seeded uniform
dequantization sample per image), train images/s, and the seconds to sample 64 images.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from densitylab.config import RunConfig
from densitylab.errors import DensitylabError
from densitylab.train.trainer import Trainer


def fixed_budget(
    model: str,
    data: str = "fashion-mnist",
    minutes: float = 8.0,
    batch_size: int = 64,
    threads: int = 2,
    test_images: int = 2000,
    model_config: dict[str, Any] | None = None,
    lr: float | None = None,
    data_dir: str | None = None,
    out: str | None = None,
    sample_count: int = 64,
    n_bits: int | None = None,
    **run_options: Any,
) -> dict[str, Any]:
    """Train ``model`` for ``minutes`` of optimizer steps and score it; ``run_options`` are further
    :class:`RunConfig` settings (e.g. ``ema``, ``schedule``, ``warmup_steps``)."""
    config = RunConfig(model=model, model_config=model_config or {}, data=data, n_bits=n_bits, lr=lr,
                       data_dir=data_dir, time_budget=f"{minutes * 60}s", batch_size=batch_size,
                       threads=threads, eval_every=10**9, checkpoint_every=10**9, **run_options)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(out or tmp), force=out is None, progress=False)
        trainer.train_loop()
        trainer.adopt_average()
        model_ = trainer.model.eval()
        test_bpd = trainer.evaluate(test_images)
        started = time.perf_counter()
        sample_error = None
        if sample_count:
            try:  # a failed draw is reported, and the training it took is not lost
                model_.sample(sample_count, generator=torch.Generator().manual_seed(0))
            except DensitylabError as exc:
                sample_error = str(exc)
        sample_seconds = time.perf_counter() - started
    return {
        "model": model,
        "data": data,
        "levels": trainer.data.levels,
        "minutes": minutes,
        "parameters": sum(p.numel() for p in model_.parameters()),
        "steps": trainer.state.step,
        "skipped_steps": trainer.state.skipped_steps,  # non-finite losses or gradients
        "train_images_per_s": trainer.state.step * batch_size / trainer.state.train_seconds,
        "test_images": test_images,
        "test_bits_per_dim": test_bpd,
        f"sample_{sample_count}_seconds": sample_seconds,
        **({"sample_error": sample_error} if sample_error else {}),
        "model_config": trainer.model.config_dict(),
        "lr": config.lr,
        "batch_size": batch_size,
        **({"run_options": run_options} if run_options else {}),
    }
