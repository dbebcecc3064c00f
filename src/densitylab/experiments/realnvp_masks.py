"""RealNVP's masks: checkerboard (+ channel) masks against half-image splits, at the same budget.

Claim (Dinh et al. 2017, as taught in the course): a RealNVP whose couplings alternate
checkerboard masks before each squeeze (and channel masks after it) models images better than
one that splits the image into its top and bottom halves, or its left and right halves.

Measured: the same ``realnvp`` (default architecture: 3 scales, 32 hidden channels) is trained
three times, for each of several seeds, for the same number of optimizer steps on the budget's
image data, with the model option ``mask`` set to ``checkerboard`` (the default), ``top-bottom``
and ``left-right``; only the spatial masks change, the channel masks after each squeeze stay.
Each run reports its test bits/dim on the whole test split (the dequantization bound), its steps
and its training speed; the test bits/dim on the first test images every few steps give the
curves, and 36 samples of the first seed's models (temperature 1) give the sample grids.

Verdict: the paired rule (:mod:`densitylab.experiments.verdict`), checkerboard against each of
the two splits; both must hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from densitylab.experiments.base import (
    ARM_COLUMNS,
    arm_rows,
    experiment,
    figure,
    image_data,
    paired_comparison,
    save_band_plot,
    save_seed_plot,
    seed_list,
    step_count,
    table,
    train_run,
)
from densitylab.experiments.verdict import PairedRule, combine
from densitylab.train.checkpoint import model_from_checkpoint
from densitylab.train.rundir import MODEL_FILE
from densitylab.viz.figures import save_png
from densitylab.viz.grid import image_grid

MASKS = ("checkerboard", "top-bottom", "left-right")
BATCH_SIZE = 64
SAMPLES = 36
# (evaluate every N steps, on the first M test images) per budget: enough points for a curve
EVAL_SCHEDULE = {"tiny": (3, 297), "small": (100, 500), "full": (500, 2000)}
MIN_STEPS = 200


def eval_curve(metrics: Path, unit: str = "bpd") -> list[list[float]]:
    """``[[step, test loss], ...]`` of the periodic evaluations in ``metrics.jsonl`` (on the
    first test images; the final whole-split number is left out, it is in ``results.json``)."""
    points = []
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if f"test_{unit}" in record:
            points.append([record["step"], record[f"test_{unit}"]])
    return points


def images_per_second(run: dict[str, Any], batch_size: int) -> float:
    """Training throughput of a run: images seen per second of optimizer steps."""
    return run["steps"] * batch_size / max(run["train_seconds"], 1e-9)


def lowest(scores: dict[str, float]) -> str:
    return min(scores, key=lambda name: scores[name])


def save_sample_panels(path: Path, samples: dict[str, torch.Tensor], levels: int) -> None:
    """One panel per mask, each a grid of that model's samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(samples), figsize=(3.6 * len(samples), 3.9), squeeze=False)
    for ax, (name, images) in zip(axes[0], samples.items(), strict=True):
        grid = image_grid(images, levels, nrow=6)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(f"mask={name}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    save_png(fig, path, dpi=110)


def sample_run(run_dir: Path, n: int, seed: int) -> torch.Tensor:
    model, _ = model_from_checkpoint(run_dir / MODEL_FILE)
    model.eval()
    with torch.no_grad():
        return model.sample(n, generator=torch.Generator().manual_seed(seed))


@experiment("realnvp-masks", "RealNVP with checkerboard + channel masks beats top/bottom and "
            "left/right splits")
def run_realnvp_masks(out: Path, budget: str, seed: int) -> dict[str, Any]:
    data, steps, seeds = image_data(budget), step_count(budget, tiny=6, small=400), seed_list(budget, seed)
    eval_every, eval_images = EVAL_SCHEDULE[budget]
    arms: dict[str, list[dict[str, Any]]] = {mask: [] for mask in MASKS}
    samples = {}
    for s in seeds:
        for mask in MASKS:
            run_dir = out / f"seed{s}" / mask
            arms[mask].append(train_run(run_dir, "realnvp", data, steps, s, {"mask": mask},
                                        batch_size=BATCH_SIZE, eval_every=eval_every,
                                        eval_images=eval_images, sample_count=0))
            if s == seeds[0]:
                samples[mask] = sample_run(run_dir, SAMPLES, s)
    levels = arms[MASKS[0]][0]["levels"]
    save_sample_panels(out / "samples.png", samples, levels)
    save_band_plot(out / "test_curves.png", {f"mask={m}": [r["curve"]["test"] for r in runs]
                                             for m, runs in arms.items()},
                   "step", f"test bits/dim (first {eval_images} images)",
                   f"RealNVP on {data}, {steps} steps per mask, mean +- sd over {len(seeds)} seeds")
    rules = [PairedRule("test bits/dim", "checkerboard", other, min_steps=MIN_STEPS)
             for other in MASKS[1:]]
    found = [paired_comparison(rule, {k: arms[k] for k in (rule.better, rule.other)}, budget)
             for rule in rules]
    save_seed_plot(out / "bits_per_dim.png", found[0]["values"] | found[1]["values"],
                   "test bits/dim", f"RealNVP on {data}, {steps} steps per mask")
    outcome = combine([f["outcome"] for f in found])
    verdict = "; ".join(f"{f['summary']}: {f['outcome']}" for f in found) + "."
    return {
        "rule": ("Both comparisons must hold (checkerboard against top-bottom, and against "
                 "left-right); each: " + rules[0].text()),
        "outcome": outcome,
        "verdict": verdict,
        "seeds": seeds,
        "steps": {mask: steps for mask in MASKS},
        "data": f"{data}, {levels} levels; test bits/dim on the whole test split "
                f"({arms['checkerboard'][0]['test_images']} images)",
        "tables": [table(
            f"RealNVP (3 scales, 32 channels) after {steps} steps per mask (batch {BATCH_SIZE}), "
            "one run per seed and mask", ARM_COLUMNS, arm_rows(arms)),
            *(f["tables"][1] for f in found)],
        "figures": [
            figure("bits_per_dim.png", "Test bits/dim of every seed and mask, with each mask's "
                   "mean +- sd."),
            figure("samples.png", f"{SAMPLES} samples (temperature 1) of the first seed's models: "
                   "checkerboard, top-bottom and left-right masks."),
            figure("test_curves.png", f"Test bits/dim on the first {eval_images} test images "
                   f"every {eval_every} steps, mean over seeds with a +- sd band, one line per mask."),
        ],
    }
