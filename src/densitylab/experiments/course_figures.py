"""Two of the course's own figures, each with a measurement behind it.

``made-orderings`` (Germain et al. 2015, MADE): a masked MLP can factorise an image in any order of
its pixels. The figure shows the five orders densitylab's MADE offers (each pixel coloured by its
rank) and, after training one MADE per order for the same time on binarized images, samples of
each; the table gives each order's exact test bits/dim over seeds. No order is "the" right one,
so the record is a measurement (no verdict); the sentence names the best and worst order.

``conditional``: a class-conditional model (a learned per-class bias in every layer, van den Oord
et al. 2016) draws the class it is asked for. One PixelCNN is trained with labels; the figure is a
sample grid with one row per class. The measurement is what the course suggests looking at, made
into a number: the model is also a classifier, ``argmax_y log P(x | y)``, and the threshold rule
asks that classifier's accuracy on test images, over seeds, to be above three times chance (1 /
number of classes), i.e. the labels change the density in the direction of their class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from densitylab.data import load_dataset
from densitylab.experiments.base import (
    experiment,
    figure,
    image_data,
    save_seed_plot,
    seed_list,
    step_count,
    table,
    train_run,
)
from densitylab.experiments.verdict import MEASUREMENT, ThresholdRule, mean_sd, plus_minus
from densitylab.models.autoregressive.made import ORDERINGS, pixel_ranks
from densitylab.train.checkpoint import model_from_checkpoint
from densitylab.train.rundir import MODEL_FILE
from densitylab.viz.figures import save_png
from densitylab.viz.grid import image_grid, save_grid

CHANCE_MULTIPLE = 3.0  # conditional: accuracy must reach this many times chance
SAMPLES_PER_ORDER = 16
MIN_STEPS = 100


def plot_orders_and_samples(path: Path, shape: tuple[int, int], samples: dict[str, torch.Tensor],
                            scores: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = shape
    fig, axes = plt.subplots(2, len(ORDERINGS), figsize=(2.6 * len(ORDERINGS), 5.6))
    for col, ordering in enumerate(ORDERINGS):
        ranks = pixel_ranks(ordering, height, width, torch.Generator().manual_seed(0))
        axes[0, col].imshow(ranks.numpy(), cmap="viridis")
        axes[0, col].set_title(f"{ordering}\n(pixel rank)", fontsize=9)
        axes[1, col].imshow(image_grid(samples[ordering], 2, nrow=4), cmap="gray", vmin=0, vmax=255)
        axes[1, col].set_title(f"samples, {scores[ordering]:.3f} bits/dim", fontsize=9)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    save_png(fig, path, dpi=100)


@experiment("made-orderings", "MADE can factorise an image in any order of its pixels (the course's "
            "figure of orderings), each an exact likelihood")
def run_made_orderings(out: Path, budget: str, seed: int) -> dict[str, Any]:
    data, steps, seeds = image_data(budget), step_count(budget, tiny=5, small=200), seed_list(budget, seed)
    rows, samples, scores = [], {}, {}
    for ordering in ORDERINGS:
        runs = []
        for s in seeds:
            run_dir = out / f"seed{s}" / ordering
            runs.append(train_run(run_dir, "made", data, steps, s, {"ordering": ordering},
                                  n_bits=1, sample_count=0, checkpoint_every=10**9,
                                  eval_every=10**9))
            if s == seeds[0]:
                model, _ = model_from_checkpoint(run_dir / MODEL_FILE)
                generator = torch.Generator().manual_seed(s)
                samples[ordering] = model.eval().sample(SAMPLES_PER_ORDER, generator=generator)
        values = [r["test_bits_per_dim"] for r in runs]
        scores[ordering] = mean_sd(values)[0]
        rows.append([ordering, round(scores[ordering], 4), round(mean_sd(values)[1], 4),
                     ", ".join(f"{v:.4f}" for v in values), steps, runs[0]["parameters"]])
    plot_orders_and_samples(out / "made_orderings.png", tuple(samples[ORDERINGS[0]].shape[-2:]), samples,
                            scores)
    best, worst = min(scores, key=scores.get), max(scores, key=scores.get)
    verdict = (f"Trained {steps} steps each on binarized {data}, every order gives an exact "
               f"likelihood; over {len(seeds)} seeds the best mean is {best} ({scores[best]:.4f} "
               f"bits/dim), the worst {worst} ({scores[worst]:.4f}).")
    return {
        "rule": "A measurement, not a test: no order is claimed to be the best, so there is no verdict.",
        "outcome": MEASUREMENT,
        "verdict": verdict,
        "seeds": seeds,
        "steps": {ordering: steps for ordering in ORDERINGS},
        "data": f"{data}, binarized (pixel >= half the range)",
        "tables": [table(f"MADE, one order each, {steps} steps per seed",
                         ["ordering", "test bits/dim (exact, mean)", "sd", "per seed", "steps",
                          "parameters"], rows)],
        "figures": [figure("made_orderings.png", "Top: each order's rank of every pixel (dark: "
                           "first). Bottom: 16 samples of the first seed's MADE trained in that "
                           "order; titles give the mean over seeds.")],
    }


@torch.no_grad()
def label_accuracy(model: Any, images: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Accuracy of ``argmax_y log P(x | y)`` over ``images``."""
    scores = torch.stack([model.log_prob(images, torch.full((len(images),), y, dtype=torch.long))
                          for y in range(n_classes)], dim=1)
    return (scores.argmax(1) == labels).float().mean().item()


@experiment("conditional", "A class-conditional model draws the class it is asked for")
def run_conditional(out: Path, budget: str, seed: int) -> dict[str, Any]:
    data, steps, seeds = image_data(budget), step_count(budget, tiny=5, small=300), seed_list(budget, seed)
    test_images = 64 if budget == "tiny" else 500
    runs, accuracies = [], []
    for s in seeds:
        run_dir = out / f"seed{s}" / "pixelcnn"
        run = train_run(run_dir, "pixelcnn", data, steps, s, conditional=True, sample_count=0,
                        checkpoint_every=10**9, eval_every=10**9)
        model, _ = model_from_checkpoint(run_dir / MODEL_FILE)
        model.eval()
        n_classes, per_class = model.n_classes, 8
        if s == seeds[0]:
            labels = torch.arange(n_classes).repeat_interleave(per_class)
            grid = model.sample(len(labels), labels, generator=torch.Generator().manual_seed(s))
            save_grid(out / "conditional_samples.png", grid, model.levels, nrow=per_class)
        test = load_dataset(data)
        accuracies.append(label_accuracy(model, test.test[:test_images],
                                         test.test_labels[:test_images], n_classes))
        runs.append(run)
    chance = 1.0 / n_classes
    rule = ThresholdRule("the accuracy of argmax_y log P(x | y) on test images",
                         CHANCE_MULTIPLE * chance, below=False, min_steps=MIN_STEPS)
    outcome = rule.judge(accuracies, budget, [r["steps"] for r in runs])
    save_seed_plot(out / "accuracy.png", {"label accuracy": accuracies}, "accuracy",
                   f"argmax_y log P(x | y) after {steps} steps (bar: {CHANCE_MULTIPLE:g}x chance = "
                   f"{CHANCE_MULTIPLE * chance:.2f})")
    verdict = (f"After {steps} steps, the conditional PixelCNN picks the right label for "
               f"{plus_minus(accuracies)} of {test_images} test images by argmax_y log P(x | y) over "
               f"{len(seeds)} seeds (chance {chance:.0%}; the bar is {CHANCE_MULTIPLE:g}x chance).")
    return {
        "rule": rule.text(),
        "outcome": outcome,
        "verdict": verdict,
        "seeds": seeds,
        "steps": {"conditional pixelcnn": steps},
        "data": f"{data} with its labels",
        "tables": [table("Conditional PixelCNN, one run per seed",
                         ["seed", "test bits/dim log P(x | y)", "steps", "train images/s",
                          "parameters", "label accuracy of argmax_y log P(x|y)", "chance"],
                         [[s, round(r["test_bits_per_dim"], 4), r["steps"], round(r["images_per_s"], 1),
                           r["parameters"], round(a, 4), chance]
                          for s, r, a in zip(seeds, runs, accuracies, strict=True)])],
        "figures": [figure("conditional_samples.png", f"Samples of the first seed's model, one row "
                           f"per class (0 to {n_classes - 1}), {per_class} per class."),
                    figure("accuracy.png", "Label accuracy of every seed, with the mean +- sd.")],
    }
