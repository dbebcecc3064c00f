"""Pixel coordinates as extra inputs of sequence models over pixels: the Pixel RNN baseline and
WaveNet on images.

Claims (course notes): an RNN over the raster sequence of pixels "improves drastically if you also
provide it with metadata on pixel position", and WaveNet on images "needs the pixel coordinates as
metadata to work".

What is trained: for each claim, the same model (``rnn`` or ``wavenet``, default size; small
networks at the tiny budget) is trained with ``coords=false`` and ``coords=true``, for the same
number of optimizer steps, with the same seeds (several: :func:`seed_list`), batch size and
learning-rate schedule, in two settings:

- **binarized mnist5k** -- the course's setting (it reports binarized MNIST after 20 epochs);
  WaveNet's default receptive field (256 steps) is about a third of the 784-step sequence, so
  without coordinates it cannot tell where in the image it is;
- **8-bit Fashion-MNIST** -- densitylab's default image data.

What is measured, all in exact test bits/dim on the first test images (the same for every run):
a test curve at fixed fractions (0, 1/8, ..., 1) of the steps, the final score, steps, train
seconds and images/s (reported beside the step-matched result, not used by it), and samples of
the first seed's runs at a third, two thirds and the end of training (copies taken during the
same run, so the early grids show the model the final one grew from).

Verdict: the paired rule of :mod:`densitylab.experiments.verdict` on the binarized setting (the
course's), as a claim of size: the gain must reach :data:`MIN_RELATIVE` (10%) of the bits/dim
without coordinates. The other setting's outcome is reported beside it, and a table puts the
course's numbers next to ours.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from densitylab.config import RunConfig
from densitylab.experiments.base import (
    epochs_for,
    experiment,
    figure,
    paired_comparison,
    read_curve,
    save_band_plot,
    save_seed_plot,
    seed_list,
    table,
    train_size,
)
from densitylab.experiments.base import threads as restored_threads
from densitylab.experiments.verdict import PairedRule
from densitylab.models.base import DensityModel
from densitylab.train.rundir import METRICS_FILE
from densitylab.train.trainer import Trainer
from densitylab.viz.figures import save_png

EVAL_FRACTIONS = tuple(k / 8 for k in range(9))  # test points, as fractions of the training time
SNAPSHOT_FRACTIONS = (1 / 3, 2 / 3)  # sample grids from these copies, and from the final model
SAMPLES = 36
BATCH_SIZE = 64
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
        self.test_curve: list[list[float]] = []  # [step, test bits/dim, train seconds]
        self.snapshots: list[tuple[int, DensityModel]] = []

    def done(self) -> bool:
        finished = super().done()
        fraction = self.progress_fraction()
        if crossed(self.pending_evals, fraction):  # one test even if a step crossed several points
            score = self.evaluate(self.config.eval_images)
            self.test_curve.append([self.state.step, score, self.state.train_seconds])
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


def train_with_snapshots(out: Path, model: str, data: str, steps: int, seed: int,
                         model_config: dict[str, Any], eval_images: int, threads: int | None = None,
                         samples: int = SAMPLES, n_bits: int | None = None,
                         batch_size: int = BATCH_SIZE, curve_images: int | None = None
                         ) -> dict[str, Any]:
    """One training run of exactly ``steps`` optimizer steps into ``out``; returns its results
    (the final score on the first ``eval_images`` test images) plus ``test_curve`` (``[[step,
    test bits/dim on the first curve_images (default: eval_images), train seconds], ...]``),
    ``curve`` (the logged training losses), ``images_per_s`` and ``grids``: ``[(step, samples
    (N, C, H, W))]`` at a third, two thirds and the end of training (none when ``samples`` is
    0)."""
    config = RunConfig(model=model, model_config=model_config, data=data, n_bits=n_bits,
                       epochs=epochs_for(steps, data, batch_size, n_bits), seed=seed,
                       batch_size=batch_size, eval_images=curve_images or eval_images,
                       eval_every=10**9, sample_count=0,  # tests and samples: done here instead
                       threads=threads)
    with restored_threads():  # the Trainer sets the thread count for the whole process
        trainer = SnapshotTrainer(config, out, EVAL_FRACTIONS,
                                  SNAPSHOT_FRACTIONS if samples else ())
        trainer.train_loop()
        score = trainer.evaluate(eval_images)
        results = {"steps": trainer.state.step, "train_seconds": trainer.state.train_seconds,
                   "parameters": sum(p.numel() for p in trainer.model.parameters()),
                   "test_bits_per_dim": score, "shape": list(trainer.data.shape),
                   "test_images": min(eval_images, len(trainer.data.test))}
        models = [*trainer.snapshots, (results["steps"], trainer.model.eval())] if samples else []
        grids = [(step, draw(snapshot, samples, seed)) for step, snapshot in models]
    return {**results, "test_curve": trainer.test_curve, "grids": grids,
            "images_per_s": results["steps"] * batch_size / max(results["train_seconds"], 1e-9),
            "receptive_field": getattr(trainer.model, "receptive_field", None),
            "levels": trainer.data.levels, "curve": read_curve(out / METRICS_FILE)}


@torch.no_grad()
def draw(model: DensityModel, n: int, seed: int) -> torch.Tensor:
    """``n`` samples of ``model`` from a generator seeded with ``seed`` (the same draws for every
    model), on the CPU."""
    return model.sample(n, generator=torch.Generator().manual_seed(seed)).cpu()


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
    save_png(fig, path, dpi=110)


@dataclass(frozen=True)
class Setting:
    """One data setting of the experiment: a dataset at some levels, its steps and test images."""

    key: str
    data: dict[str, str]  # budget -> dataset
    n_bits: int | None
    steps: dict[str, int]  # budget -> steps per run
    eval_images: int

    def label(self, budget: str) -> str:
        data = self.data[budget]
        return f"binarized {data}" if self.n_bits == 1 else f"{data} (native levels)"


def coordinates_experiment(out: Path, budget: str, seed: int, model: str,
                           settings: tuple[Setting, ...], options: dict[str, dict[str, Any]],
                           course: dict[str, float]) -> dict[str, Any]:
    """Train ``model`` with and without ``coords`` for the same steps and seeds in each setting;
    the outcome is that of the first setting (the course's), the others are reported beside it."""
    seeds = seed_list(budget, seed)
    threads = 1 if budget == "tiny" else None  # tiny 8x8 networks: a second thread only contends
    config = options.get(budget, options.get("small", {}))
    tables, figures, outcomes, sentences, step_record = [], [], {}, [], {}
    course_rows = []
    for setting in settings:
        data, steps, name = setting.data[budget], setting.steps[budget], setting.label(budget)
        eval_images = min(setting.eval_images, 64) if budget == "tiny" else setting.eval_images
        curve_images = min(eval_images, CURVE_IMAGES)
        arms: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        for k, s in enumerate(seeds):
            for label, coords in VARIANTS:
                arms[label].append(train_with_snapshots(
                    out / setting.key / f"seed{s}" / f"coords_{label}", model, data, steps, s,
                    {**config, "coords": coords}, eval_images, threads,
                    samples=SAMPLES if k == 0 else 0, n_bits=setting.n_bits,
                    curve_images=curve_images))
        rule = PairedRule("test bits/dim", "with", "without", min_relative=MIN_RELATIVE,
                          min_steps=MIN_STEPS)
        found = paired_comparison(rule, arms, budget, title=(
            f"{model}, {name}: test bits/dim on the first {eval_images} test images after "
            f"{steps} steps (batch {BATCH_SIZE}), one run per seed and arm"))
        outcomes[setting.key] = found["outcome"]
        step_record.update({f"{setting.key}/{label}": steps for label in arms})
        sentences.append(f"{name}: {found['summary']}: {found['outcome']}")
        tables += found["tables"]
        first = arms["with"][0]
        field = first["receptive_field"]
        if field is not None:
            sentences[-1] += (f" (receptive field {field} of the {math.prod(first['shape'])}-step "
                              "pixel sequence)")
        save_band_plot(out / f"{setting.key}_test_curves.png",
                       {f"{label} coordinates": [r["test_curve"] for r in runs]
                        for label, runs in arms.items()},
                       "step", f"test bits/dim (first {curve_images} test images)",
                       f"{model}, {name}: mean +- sd over {len(seeds)} seeds")
        save_seed_plot(out / f"{setting.key}_final.png", found["values"], "test bits/dim",
                       f"{model}, {name}, after {steps} steps")
        plot_sample_grids(out / f"{setting.key}_samples.png", {k: v[0] for k, v in arms.items()},
                          f"{model} ({name}, seed {seeds[0]}) after a third, two thirds and "
                          "all of the steps")
        figures += [
            figure(f"{setting.key}_test_curves.png", f"{name}: test bits/dim against "
                   "steps with and without the pixel coordinates (line: mean over seeds; band: +- "
                   "one standard deviation)."),
            figure(f"{setting.key}_final.png", f"{name}: final test bits/dim of every "
                   "seed, and each arm's mean +- sd."),
            figure(f"{setting.key}_samples.png", f"{name}: samples of the first seed's "
                   "runs after a third, two thirds and all of the steps; top row without "
                   "coordinates, bottom row with."),
        ]
        if setting.n_bits == 1:
            for label in ("without", "with"):
                course_rows.append([f"{model} {label} coordinates", course[label],
                                    found["tables"][0]["rows"][list(arms).index(label)][1],
                                    found["tables"][0]["rows"][list(arms).index(label)][2], steps])
    tables.append(table(
        "The course's numbers (binarized MNIST, 60,000 images, 20 epochs) beside ours "
        f"({settings[0].label(budget)}, {train_size(settings[0].data[budget]):,} training images, "
        "the steps given); both in test bits/dim",
        ["model", "course", "densitylab (mean)", "densitylab (sd)", "densitylab steps"],
        course_rows + [[name, value, None, None, None] for name, value in COURSE_OTHERS.items()]))
    main = settings[0]
    return {
        "rule": (f"Judged on {main.label(budget)} (the course's setting: a receptive field "
                 "shorter than the image where the model has one); the claim is one of size, so "
                 f"the gain must reach {MIN_RELATIVE:.0%} of the bits/dim without coordinates. "
                 + rule.text()),
        "outcome": outcomes[main.key],
        "verdict": "; ".join(sentences) + ".",
        "seeds": seeds,
        "steps": step_record,
        "data": "; ".join(f"{s.label(budget)} (test bits/dim on the first "
                          f"{min(s.eval_images, 64) if budget == 'tiny' else s.eval_images} test "
                          "images)" for s in settings),
        "tables": tables,
        "figures": figures,
    }


CURVE_IMAGES = 256  # the test curve's points: the first test images
MIN_RELATIVE = 0.10  # "drastically" / "needs ... to work": at least 10% fewer bits/dim
MIN_STEPS = 100
# The course's binarized-MNIST results (20 epochs, test bits/dim) for the models it compared.
COURSE = {"rnn": {"without": 0.1113, "with": 0.1117},
          "wavenet": {"without": 0.1333, "with": 0.1193}}
COURSE_OTHERS = {"pixelcnn (course)": 0.1087, "made (course)": 0.1731}


def settings_for(rnn_like: dict[str, int], fashion: dict[str, int]) -> tuple[Setting, ...]:
    return (
        Setting("binarized", {"tiny": "digits", "small": "mnist5k",
                                                   "full": "mnist5k"}, 1, rnn_like, 1000),
        Setting("fashion", {"tiny": "digits", "small": "fashion-mnist",
                                                   "full": "fashion-mnist"}, None, fashion, 1000),
    )


@experiment("rnn-coords", "An RNN over pixels improves drastically when each step is also given "
            "the pixel's (row, column)")
def run_rnn_coords(out: Path, budget: str, seed: int) -> dict[str, Any]:
    settings = settings_for({"tiny": 8, "small": 200, "full": 2000},
                            {"tiny": 8, "small": 100, "full": 1000})
    options = {"tiny": {"hidden_size": 16}}
    return coordinates_experiment(out, budget, seed, "rnn", settings, options, COURSE["rnn"])


@experiment("wavenet-coords", "WaveNet on images needs the pixel coordinates as metadata to work")
def run_wavenet_coords(out: Path, budget: str, seed: int) -> dict[str, Any]:
    # the default receptive field, 256 steps, is about a third of a 28x28 image; at tiny (8x8)
    # 4 layers give 16 of the 64 steps
    settings = settings_for({"tiny": 8, "small": 200, "full": 2000},
                            {"tiny": 8, "small": 100, "full": 1000})
    options = {"tiny": {"residual_channels": 8, "skip_channels": 8, "output_hidden": 8,
                        "layers_per_block": 4}}
    return coordinates_experiment(out, budget, seed, "wavenet", settings, options,
                                  COURSE["wavenet"])
