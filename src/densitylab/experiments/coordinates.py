"""Pixel coordinates as extra inputs of sequence models over pixels: the Pixel RNN baseline and
WaveNet on images.

Claims (course notes): an RNN over the raster sequence of pixels "improves drastically if you also
provide it with metadata on pixel position", and WaveNet on images "needs the pixel coordinates as
metadata to work".

What is trained: for each claim, the same model (``rnn`` or ``wavenet``, default size) is trained
twice through the one Trainer, with ``coords=false`` and ``coords=true``, with the same seed, data
(:func:`image_data`: Fashion-MNIST 8-bit, or 8x8 digits at the tiny budget), batch size,
learning-rate schedule and training-time budget. The two runs differ only in the coordinates.

What is measured, all in exact test bits/dim:

- a test curve: at fixed fractions (0, 1/8, ..., 1) of each run's training-time budget the
  Trainer's model is scored on the first ``eval_images`` test images (the same images for both
  runs), plotted against training seconds (evaluation and sampling time not counted);
- the final score on the whole test split (``Trainer.finish``), steps, images/s and parameters;
- samples at three points of the SAME run: the weights are copied when a third and two thirds of
  the training time have been spent, and at the end; after training, each copy draws a grid with
  the same seed (one run with one cosine schedule, not three runs of increasing length, so the
  early grids show the model the final one grew from).

Verdict: reproduced when the run with coordinates ends with the lower test bits/dim on the whole
test split; the sentence gives both numbers and the gap.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch

from densitylab.config import RunConfig
from densitylab.experiments.base import experiment, figure, image_data, read_curve, seconds, table
from densitylab.experiments.base import threads as restored_threads
from densitylab.models.base import DensityModel
from densitylab.train.files import atomic_write
from densitylab.train.rundir import METRICS_FILE
from densitylab.train.trainer import Trainer

EVAL_FRACTIONS = tuple(k / 8 for k in range(9))  # test points, as fractions of the training time
SNAPSHOT_FRACTIONS = (1 / 3, 2 / 3)  # sample grids from these copies, and from the final model
SAMPLES = 36
VARIANTS = (("without", False), ("with", True))  # (label, coords)


class SnapshotTrainer(Trainer):
    """The Trainer, whose loop also scores the model on the first ``eval_images`` test images and
    copies its weights when given fractions of the training-time budget have been spent (outside
    the timed steps, so neither costs training time)."""

    def __init__(self, config: RunConfig, out: Path, eval_fractions: tuple[float, ...],
                 snapshot_fractions: tuple[float, ...]) -> None:
        super().__init__(config.validate(), out, force=True, progress=False)
        self.pending_evals = sorted(eval_fractions)
        self.pending_snapshots = sorted(snapshot_fractions)
        self.test_curve: list[list[float]] = []  # [train seconds, test bits/dim, step]
        self.snapshots: list[tuple[int, DensityModel]] = []

    def done(self) -> bool:
        finished = super().done()
        fraction = self.progress_fraction()
        if crossed(self.pending_evals, fraction):  # one test even if a step crossed several points
            score = self.evaluate(self.config.eval_images)
            self.test_curve.append([self.state.train_seconds, score, self.state.step])
        passed = crossed(self.pending_snapshots, fraction)
        if passed:
            snapshot = copy.deepcopy(self.model).eval()
            self.snapshots.extend((self.state.step, snapshot) for _ in range(passed))
        return finished


def crossed(pending: list[float], fraction: float) -> int:
    """Remove the points of ``pending`` (sorted) reached at ``fraction``; return how many."""
    count = 0
    while pending and fraction >= pending[0]:
        pending.pop(0)
        count += 1
    return count


def train_with_snapshots(out: Path, model: str, data: str, train_seconds: float, seed: int,
                         model_config: dict[str, Any], eval_images: int, threads: int | None = None,
                         samples: int = SAMPLES) -> dict[str, Any]:
    """One training run into ``out``; returns its results plus ``test_curve`` (``[[train seconds,
    test bits/dim on eval_images, step], ...]``), ``curve`` (the logged training losses) and
    ``grids``: ``[(step, samples (N, C, H, W))]`` at a third, two thirds and the end of training."""
    config = RunConfig(model=model, model_config=model_config, data=data,
                       time_budget=f"{train_seconds}s", seed=seed, eval_images=eval_images,
                       eval_every=10**9, sample_count=0,  # tests and samples: done here instead
                       threads=threads)
    with restored_threads():  # the Trainer sets the thread count for the whole process
        trainer = SnapshotTrainer(config, out, EVAL_FRACTIONS, SNAPSHOT_FRACTIONS)
        results = trainer.fit()
        models = [*trainer.snapshots, (results["steps"], trainer.model.eval())]
        grids = [(step, draw(snapshot, samples, seed)) for step, snapshot in models]
    return {**results, "test_curve": trainer.test_curve, "grids": grids,
            "receptive_field": getattr(trainer.model, "receptive_field", None),
            "levels": trainer.data.levels, "curve": read_curve(out / METRICS_FILE)}


@torch.no_grad()
def draw(model: DensityModel, n: int, seed: int) -> torch.Tensor:
    """``n`` samples of ``model`` from a generator seeded with ``seed`` (the same draws for every
    model), on the CPU."""
    return model.sample(n, generator=torch.Generator().manual_seed(seed)).cpu()


def images_per_second(run: dict[str, Any], batch_size: int) -> float:
    return run["steps"] * batch_size / max(run["train_seconds"], 1e-9)


def plot_sample_grids(path: Path, runs: dict[str, dict[str, Any]], title: str) -> None:
    """Rows: the two variants; columns: a third, two thirds and the end of training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from densitylab.viz.grid import image_grid

    labels = list(runs)
    n_cols = len(runs[labels[0]]["grids"])
    fig, axes = plt.subplots(len(labels), n_cols, figsize=(3.1 * n_cols, 3.4 * len(labels)),
                             squeeze=False)
    for row, label in enumerate(labels):
        run = runs[label]
        for col, (step, images) in enumerate(run["grids"]):
            ax = axes[row, col]
            ax.imshow(image_grid(images, run["levels"]), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label} coordinates, step {step}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def verdict_sentence(model: str, data: str, train_seconds: float, final: dict[str, float]) -> str:
    without, with_ = final["without"], final["with"]
    gap = without - with_
    direction = "lower" if gap > 0 else "higher" if gap < 0 else "equal"
    outcome = "supports the claim" if gap > 0 else "does not support the claim"
    return (f"Trained {train_seconds:g} s each on {data}, {model} with the pixel coordinates scores "
            f"{with_:.3f} test bits/dim and without them {without:.3f}: {abs(gap):.3f} bits/dim "
            f"({abs(gap) / without:.1%}) {direction} with coordinates, which {outcome} at this budget.")


def coordinates_experiment(out: Path, budget: str, seed: int, model: str,
                           small_seconds: float, eval_images: int) -> dict[str, Any]:
    """Train ``model`` with and without ``coords`` at the same budget; the shared experiment."""
    from densitylab.viz.curves import save_line_plot

    data, train_seconds = image_data(budget), seconds(budget, small=small_seconds)
    eval_images = min(eval_images, 64) if budget == "tiny" else eval_images
    # tiny (the tests): 8x8 images gain nothing from a second thread, and on a busy machine two
    # threads made a step of these small networks up to 50x slower; other budgets: the default
    threads = 1 if budget == "tiny" else None
    runs = {label: train_with_snapshots(out / f"coords_{label}", model, data, train_seconds, seed,
                                        {"coords": coords}, eval_images, threads)
            for label, coords in VARIANTS}
    final = {label: run["test_bits_per_dim"] for label, run in runs.items()}
    save_line_plot(out / "test_curves.png",
                   {f"{label} coordinates": run["test_curve"] for label, run in runs.items()},
                   "training seconds", f"test bits/dim (first {eval_images} test images)",
                   f"{model} on {data}: with and without the pixel coordinates")
    plot_sample_grids(out / "samples.png", runs,
                      f"{model} samples after a third, two thirds and all of the training time")
    batch = RunConfig().batch_size
    shape = runs["with"]["shape"]
    rows = [[label, round(run["test_bits_per_dim"], 4), run["steps"],
             round(images_per_second(run, batch), 1), run["parameters"]]
            for label, run in runs.items()]
    data_text = (f"{data}: {runs['with']['test_images']} test images of shape "
                 f"{'x'.join(map(str, shape))}, {runs['with']['levels']} levels")
    field = runs["with"]["receptive_field"]
    if field is not None:
        dim = math.prod(shape)
        data_text += f"; {model}'s receptive field is {field} steps of the {dim}-step pixel sequence"
    curve_rows = [[label, round(t, 1), step, round(bpd, 4)]
                  for label, run in runs.items() for t, bpd, step in run["test_curve"]]
    return {
        "verdict": verdict_sentence(model, data, train_seconds, final),
        "reproduced": final["with"] < final["without"],
        "data": data_text,
        "tables": [
            table(f"{model} after {train_seconds:g} s of training each (final score on the whole "
                  "test split)",
                  ["coordinates", "test bits/dim", "steps", "images/s", "parameters"], rows),
            table(f"Test bits/dim during training (first {eval_images} test images)",
                  ["coordinates", "training seconds", "step", "test bits/dim"], curve_rows),
        ],
        "figures": [
            figure("test_curves.png", f"Test bits/dim of {model} against training time, with and "
                   "without the pixel coordinates (same seed, data and schedule)."),
            figure("samples.png", f"Samples of {model} (same seed) after a third, two thirds and "
                   "all of the training time; top row without coordinates, bottom row with."),
        ],
    }


@experiment("rnn-coords", "An RNN over pixels improves drastically when each step is also given "
            "the pixel's (row, column)")
def run_rnn_coords(out: Path, budget: str, seed: int) -> dict[str, Any]:
    # small, 8 minutes on 2 cores: per run 140 s of training, about 35 s to score the 10,000 test
    # images at the end, 10 s for the test curve and 5 s for three sample grids
    return coordinates_experiment(out, budget, seed, "rnn", small_seconds=140, eval_images=256)


@experiment("wavenet-coords", "WaveNet on images needs the pixel coordinates as metadata to work")
def run_wavenet_coords(out: Path, budget: str, seed: int) -> dict[str, Any]:
    # small, 8 minutes on 2 cores: per run 110 s of training, about 70 s to score the 10,000 test
    # images at the end (WaveNet's pass is twice the RNN's), 10 s of test curve, 8 s of sampling
    return coordinates_experiment(out, budget, seed, "wavenet", small_seconds=110, eval_images=160)
