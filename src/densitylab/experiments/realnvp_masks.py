"""RealNVP's masks: checkerboard (+ channel) masks against half-image splits, at the same budget.

Claim (Dinh et al. 2017, as taught in the course): a RealNVP whose couplings alternate
checkerboard masks before each squeeze (and channel masks after it) models images better than
one that splits the image into its top and bottom halves, or its left and right halves.

Measured: the same ``realnvp`` (default architecture: 3 scales, 32 hidden channels) is trained
three times for the same number of seconds on the budget's image data, with the model option
``mask`` set to ``checkerboard`` (the default), ``top-bottom`` and ``left-right``; only the
spatial masks change, the channel masks after each squeeze stay. Each run reports its test
bits/dim on the whole test split (the dequantization bound), its steps and its training speed;
the test bits/dim on the first test images every few steps give the curves, and 36 samples of
each model (temperature 1) give the sample grids.

Verdict: reproduced when the checkerboard model has the lowest test bits/dim of the three.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from densitylab.experiments.base import experiment, figure, image_data, seconds, table, train_run
from densitylab.train.checkpoint import model_from_checkpoint
from densitylab.train.files import atomic_write
from densitylab.train.rundir import METRICS_FILE, MODEL_FILE
from densitylab.viz.curves import save_line_plot
from densitylab.viz.grid import image_grid

MASKS = ("checkerboard", "top-bottom", "left-right")
BATCH_SIZE = 64
SAMPLES = 36
# (evaluate every N steps, on the first M test images) per budget: enough points for a curve
EVAL_SCHEDULE = {"tiny": (3, 297), "small": (100, 500), "full": (500, 2000)}


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
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def sample_run(run_dir: Path, n: int, seed: int) -> torch.Tensor:
    model, _ = model_from_checkpoint(run_dir / MODEL_FILE)
    model.eval()
    with torch.no_grad():
        return model.sample(n, generator=torch.Generator().manual_seed(seed))


@experiment("realnvp-masks", "RealNVP with checkerboard + channel masks beats top/bottom and "
            "left/right splits")
def run_realnvp_masks(out: Path, budget: str, seed: int) -> dict[str, Any]:
    data, train_seconds = image_data(budget), seconds(budget, small=105, tiny=1.5)
    eval_every, eval_images = EVAL_SCHEDULE[budget]
    runs, curves, samples = {}, {}, {}
    for mask in MASKS:
        run_dir = out / mask
        runs[mask] = train_run(run_dir, "realnvp", data, train_seconds, seed, {"mask": mask},
                               batch_size=BATCH_SIZE, eval_every=eval_every, eval_images=eval_images)
        curves[f"mask={mask}"] = eval_curve(run_dir / METRICS_FILE)
        samples[mask] = sample_run(run_dir, SAMPLES, seed)
    levels = runs[MASKS[0]]["levels"]
    save_sample_panels(out / "samples.png", samples, levels)
    save_line_plot(out / "test_curves.png", curves, "step", f"test bits/dim (first {eval_images} images)",
                   f"RealNVP on {data}, {train_seconds:g} s per mask")
    scores = {mask: runs[mask]["test_bits_per_dim"] for mask in MASKS}
    best = lowest(scores)
    reproduced = best == "checkerboard"
    others = ", ".join(f"{m} {scores[m]:.3f}" for m in MASKS[1:])
    verdict = (f"Trained {train_seconds:g} s each on {data}, RealNVP scores {scores['checkerboard']:.3f} "
               f"test bits/dim with checkerboard masks against {others}: "
               + ("checkerboard is the lowest, as claimed." if reproduced else
                  f"{best} is the lowest, so the claim does not hold at this budget."))
    return {
        "verdict": verdict,
        "reproduced": reproduced,
        "data": f"{data}, {levels} levels; test bits/dim on the whole test split "
                f"({runs['checkerboard']['test_images']} images)",
        "tables": [table(
            f"RealNVP (3 scales, 32 channels) after {train_seconds:g} s of training per mask "
            f"(batch {BATCH_SIZE})",
            ["mask", "test bits/dim", "steps", "train images/s", "parameters"],
            [[mask, round(scores[mask], 4), runs[mask]["steps"],
              round(images_per_second(runs[mask], BATCH_SIZE), 1), runs[mask]["parameters"]]
             for mask in MASKS])],
        "figures": [
            figure("samples.png", f"{SAMPLES} samples (temperature 1) of each model: checkerboard, "
                   "top-bottom and left-right masks."),
            figure("test_curves.png", f"Test bits/dim on the first {eval_images} test images "
                   f"every {eval_every} steps, one line per mask."),
        ],
    }
