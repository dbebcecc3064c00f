"""Two of the course's own figures, each with a measurement behind it.

``made-orderings`` (Germain et al. 2015, MADE): a masked MLP can factorise an image in any order of
its pixels. The figure shows the five orders densitylab's MADE offers (each pixel coloured by its
rank) and, after training one MADE per order for the same time on binarized images, samples of
each; the table gives each order's exact test bits/dim. No order is "the" right one, so the record
makes no claim to reproduce (``reproduced: null``); the verdict names the best and worst order.

``conditional``: a class-conditional model (a learned per-class bias in every layer, van den Oord
et al. 2016) draws the class it is asked for. One PixelCNN is trained with labels; the figure is a
sample grid with one row per class. The measurement is what the course suggests looking at, made
into a number: the model is also a classifier, ``argmax_y log P(x | y)``, and the verdict holds if
that classifier's accuracy on test images is at least three times chance (1 / number of classes),
i.e. the labels change the density in the direction of their class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from densitylab.data import load_dataset
from densitylab.experiments.base import experiment, figure, image_data, seconds, table, train_run
from densitylab.models.autoregressive.made import ORDERINGS, pixel_ranks
from densitylab.train.checkpoint import model_from_checkpoint
from densitylab.train.files import atomic_write
from densitylab.train.rundir import MODEL_FILE
from densitylab.viz.grid import image_grid, save_grid

CHANCE_MULTIPLE = 3.0  # conditional: accuracy must reach this many times chance
SAMPLES_PER_ORDER = 16


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
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


@experiment("made-orderings", "MADE can factorise an image in any order of its pixels (the course's "
            "figure of orderings), each an exact likelihood")
def run_made_orderings(out: Path, budget: str, seed: int) -> dict[str, Any]:
    data, train_seconds = image_data(budget), seconds(budget, small=30, tiny=1.0)
    rows, samples, scores = [], {}, {}
    for ordering in ORDERINGS:
        run_dir = out / ordering
        run = train_run(run_dir, "made", data, train_seconds, seed, {"ordering": ordering},
                        n_bits=1, sample_count=0, checkpoint_every=10**9, eval_every=10**9)
        model, _ = model_from_checkpoint(run_dir / MODEL_FILE)
        generator = torch.Generator().manual_seed(seed)
        samples[ordering] = model.eval().sample(SAMPLES_PER_ORDER, generator=generator)
        scores[ordering] = run["test_bits_per_dim"]
        rows.append([ordering, run["test_bits_per_dim"], run["steps"], run["parameters"]])
    plot_orders_and_samples(out / "made_orderings.png", tuple(samples[ORDERINGS[0]].shape[-2:]), samples,
                            scores)
    best, worst = min(scores, key=scores.get), max(scores, key=scores.get)
    verdict = (f"Trained {train_seconds:g} s each on binarized {data}, every order gives an exact "
               f"likelihood; the best is {best} ({scores[best]:.4f} bits/dim), the worst {worst} "
               f"({scores[worst]:.4f}).")
    return {
        "verdict": verdict,
        "reproduced": None,
        "data": f"{data}, binarized (pixel >= half the range)",
        "tables": [table(f"MADE, one order each, {train_seconds:g} s of training",
                         ["ordering", "test bits/dim (exact)", "steps", "parameters"], rows)],
        "figures": [figure("made_orderings.png", "Top: each order's rank of every pixel (dark: "
                           "first). Bottom: 16 samples of the MADE trained in that order.")],
    }


@torch.no_grad()
def label_accuracy(model: Any, images: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Accuracy of ``argmax_y log P(x | y)`` over ``images``."""
    scores = torch.stack([model.log_prob(images, torch.full((len(images),), y, dtype=torch.long))
                          for y in range(n_classes)], dim=1)
    return (scores.argmax(1) == labels).float().mean().item()


@experiment("conditional", "A class-conditional model draws the class it is asked for")
def run_conditional(out: Path, budget: str, seed: int) -> dict[str, Any]:
    data, train_seconds = image_data(budget), seconds(budget, small=120, tiny=2.0)
    test_images = 64 if budget == "tiny" else 500
    run = train_run(out / "pixelcnn", "pixelcnn", data, train_seconds, seed, conditional=True,
                    sample_count=0, checkpoint_every=10**9, eval_every=10**9)
    model, _ = model_from_checkpoint(out / "pixelcnn" / MODEL_FILE)
    model.eval()
    n_classes, per_class = model.n_classes, 8
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    grid = model.sample(len(labels), labels, generator=torch.Generator().manual_seed(seed))
    save_grid(out / "conditional_samples.png", grid, model.levels, nrow=per_class)
    test = load_dataset(data)
    accuracy = label_accuracy(model, test.test[:test_images], test.test_labels[:test_images], n_classes)
    chance = 1.0 / n_classes
    reproduced = accuracy >= CHANCE_MULTIPLE * chance
    verdict = (f"After {train_seconds:g} s of training, the conditional PixelCNN picks the right label "
               f"for {accuracy:.1%} of {test_images} test images by argmax_y log P(x | y) (chance "
               f"{chance:.0%}; the bar is {CHANCE_MULTIPLE:g}x chance): the claim "
               f"{'holds' if reproduced else 'does not hold at this budget'}.")
    return {
        "verdict": verdict,
        "reproduced": reproduced,
        "data": f"{data} with its labels",
        "tables": [table("Conditional PixelCNN", ["test bits/dim log P(x | y)", "steps", "parameters",
                                                   "label accuracy of argmax_y log P(x|y)", "chance"],
                         [[run["test_bits_per_dim"], run["steps"], run["parameters"], accuracy, chance]])],
        "figures": [figure("conditional_samples.png", f"Samples, one row per class (0 to {n_classes - 1}), "
                           f"{per_class} per class.")],
    }

