"""Colour with R | G | B masks (van den Oord et al. 2016, Pixel Recurrent Neural Networks,
section 3.4; the course's coloured-MNIST homework).

Claim: an autoregressive model of colour images factorises each pixel over its channels,
``p(x_i) = p(R_i | x_<i) p(G_i | R_i, x_<i) p(B_i | R_i, G_i, x_<i)``, which the masks of every
convolution enforce: mask A lets a channel see only the earlier channels of the same pixel, mask B
also itself. The result is a model that draws coherent colour images.

Measured, exactly, on an untrained ``pixelcnn`` over ``3 x 9 x 9`` inputs (random weights; the
dependencies are a property of the wiring): from autograd, which input sub-pixels each output
channel of the centre pixel depends on. The claim's structure is reproduced when every channel
sees every channel of the earlier pixels, R sees none of the centre pixel, G its R, B its R and G,
and nothing later. Then the same model is trained on ``colored-mnist`` with 4 levels per channel
(``n_bits=2``, the course's setting) for the same steps and several seeds: samples of the first
seed and the test bits/dim of all seeds (context, not judged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from densitylab.experiments.base import (
    experiment,
    figure,
    save_seed_plot,
    seed_list,
    step_count,
    table,
    train_run,
)
from densitylab.experiments.verdict import NOT_REPRODUCED, REPRODUCED, mean_sd, plus_minus
from densitylab.models.registry import build_model
from densitylab.train.checkpoint import model_from_checkpoint
from densitylab.train.rundir import MODEL_FILE
from densitylab.viz.figures import save_png
from densitylab.viz.grid import save_grid

CHANNELS = ("R", "G", "B")
SIZE = 9
SAMPLES = {"tiny": 4, "small": 36, "full": 64}
TINY_OPTIONS = {"hidden_channels": 12, "n_residual_blocks": 1, "output_hidden": 12, "first_kernel": 5}


def channel_dependencies(model: Any, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """``(3, 3, size, size)`` bool: ``[c_out, c_in, i, j]`` is whether the parameters of output
    channel ``c_out`` at the centre pixel depend on input channel ``c_in`` at pixel ``(i, j)``."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    model = model.double()
    inputs = torch.randn(4, 3, size, size, dtype=torch.double, requires_grad=True)
    centre = size // 2
    params = model.params_from_input(inputs)  # (B, C, P, H, W)
    seen = []
    for c in range(3):
        (grad,) = torch.autograd.grad(params[:, c, :, centre, centre].pow(2).sum(), inputs,
                                      retain_graph=True)
        seen.append((grad != 0).any(0))
    return torch.stack(seen)


def expected_dependencies(size: int = SIZE) -> torch.Tensor:
    """What the claim says, as the same ``(3, 3, size, size)`` array: every channel of every
    earlier pixel (in the receptive field's reach, so compared only there), and at the centre the
    channels before the output channel."""
    centre = size // 2
    index = torch.arange(size * size).view(size, size)
    earlier = index < centre * size + centre
    out = torch.zeros(3, 3, size, size, dtype=torch.bool)
    for c_out in range(3):
        for c_in in range(3):
            out[c_out, c_in] = earlier
            out[c_out, c_in, centre, centre] = c_in < c_out
    return out


def check(seen: torch.Tensor) -> dict[str, Any]:
    """The centre pixel's channel matrix, and whether anything not allowed is seen (a later pixel,
    or a channel at or after the output's at the centre)."""
    size = seen.shape[-1]
    centre = size // 2
    allowed = expected_dependencies(size)
    matrix = seen[:, :, centre, centre]
    return {"matrix": matrix, "forbidden": int((seen & ~allowed).sum()),
            "centre_as_claimed": bool(torch.equal(matrix, allowed[:, :, centre, centre]))}


def plot_dependencies(path: Path, seen: torch.Tensor) -> None:
    """One panel per output channel: for each pixel, which input channels it sees (RGB colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = seen.shape[-1] // 2
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    for c_out, ax in enumerate(axes[:3]):
        image = seen[c_out].permute(1, 2, 0).double().numpy() * 0.85
        image[centre, centre] = image[centre, centre] * 0.85 + 0.15
        ax.imshow(image, interpolation="nearest")
        ax.add_patch(plt.Rectangle((centre - 0.5, centre - 0.5), 1, 1, fill=False, color="white", lw=1.5))
        ax.set_title(f"output {CHANNELS[c_out]} of the centre pixel sees\n(colour = input channels "
                     "seen; white box: the pixel)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    matrix = seen[:, :, centre, centre].double().numpy()
    axes[3].imshow(matrix, cmap="Greys", vmin=0, vmax=1)
    axes[3].set_xticks(range(3), [f"in {c}" for c in CHANNELS])
    axes[3].set_yticks(range(3), [f"out {c}" for c in CHANNELS])
    axes[3].set_title("within the centre pixel\n(black: depends)", fontsize=8)
    fig.tight_layout()
    save_png(fig, path, dpi=100)


@experiment("colour-masks", "Colour PixelCNN: R | G | B masks order the channels of each pixel "
            "(R, then G given R, then B given R and G) and draw colour images")
def run_colour_masks(out: Path, budget: str, seed: int) -> dict[str, Any]:
    options = TINY_OPTIONS if budget == "tiny" else {}
    seen = channel_dependencies(build_model("pixelcnn", (3, SIZE, SIZE), 4, options), SIZE, seed)
    found = check(seen)
    plot_dependencies(out / "channel_dependencies.png", seen)
    seeds, steps = seed_list(budget, seed), step_count(budget, tiny=3, small=300)
    data = "colored-mnist"
    runs = []
    for s in seeds:
        run_dir = out / f"seed{s}"
        runs.append(train_run(run_dir, "pixelcnn", data, steps, s, options, n_bits=2,
                              sample_count=0, eval_every=10**9, checkpoint_every=10**9))
        if s == seeds[0]:
            model, _ = model_from_checkpoint(run_dir / MODEL_FILE)
            n = SAMPLES[budget]
            samples = model.eval().sample(n, generator=torch.Generator().manual_seed(s))
            save_grid(out / "samples.png", samples, model.levels, nrow=int(n**0.5))
    scores = [r["test_bits_per_dim"] for r in runs]
    save_seed_plot(out / "bits_per_dim.png", {"pixelcnn": scores}, "test bits/dim",
                   f"colored-mnist, 4 levels per channel, {steps} steps")
    holds = found["centre_as_claimed"] and found["forbidden"] == 0
    matrix = found["matrix"]
    return {
        "rule": ("Exact, from the wiring: reproduced when, at the centre pixel, R depends on no "
                 "channel of that pixel, G on R only and B on R and G, and no output depends on a "
                 "later pixel (nor on its own or a later channel); not reproduced otherwise. The "
                 "trained bits/dim and samples are context, not judged."),
        "outcome": REPRODUCED if holds else NOT_REPRODUCED,
        "verdict": (f"Within the centre pixel R sees {seen_text(matrix[0])}, G sees "
                    f"{seen_text(matrix[1])} and B sees {seen_text(matrix[2])}; "
                    f"{found['forbidden']} forbidden (later) sub-pixels are seen. Trained "
                    f"{steps} steps on {data} (4 levels per channel), PixelCNN scores "
                    f"{plus_minus(scores)} test bits/dim over {len(seeds)} seeds."),
        "seeds": seeds,
        "steps": {"pixelcnn": steps},
        "data": f"random 3x{SIZE}x{SIZE} inputs (dependencies); {data} with n_bits=2 (training)",
        "tables": [
            table("Within the centre pixel: does output channel (row) depend on input channel?",
                  ["output", "R", "G", "B", "earlier pixels seen (of 3 channels x "
                   f"{(SIZE * SIZE) // 2})"],
                  [[CHANNELS[c], *[bool(v) for v in matrix[c]], int(seen[c].sum() - matrix[c].sum())]
                   for c in range(3)]),
            table(f"PixelCNN on {data} (n_bits=2) after {steps} steps, one run per seed",
                  ["seed", "test bits/dim", "steps", "train images/s", "parameters"],
                  [[s, round(r["test_bits_per_dim"], 4), r["steps"], round(r["images_per_s"], 1),
                    r["parameters"]] for s, r in zip(seeds, runs, strict=True)]
                  + [["mean", round(mean_sd(scores)[0], 4), steps, None, None]]),
        ],
        "figures": [
            figure("channel_dependencies.png", "Which sub-pixels each output channel of the centre "
                   "pixel depends on (untrained PixelCNN, exact autograd): an input pixel is drawn "
                   "in the colour of the channels seen (white: all three)."),
            figure("samples.png", f"{SAMPLES[budget]} samples of the first seed's PixelCNN on {data} "
                   "(4 levels per channel)."),
            figure("bits_per_dim.png", "Test bits/dim of every seed, with the mean +- sd."),
        ],
    }


def seen_text(row: torch.Tensor) -> str:
    names = [c for c, v in zip(CHANNELS, row.tolist(), strict=True) if v]
    return " and ".join(names) if names else "nothing"
