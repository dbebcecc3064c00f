"""A leaderboard: every registered image model on the same data for the same number of steps.

Every model whose ``data_kinds`` include images (taken from the registry, so a new model joins by
itself) trains for the same number of optimizer steps, with the same seeds, on the budget's image
data at its native levels (Fashion-MNIST 8-bit; ``digits``' 17 levels at the ``tiny`` budget), and
every autoregressive model trains again on binarized ``mnist5k`` (``n_bits=1``; real MNIST digits,
comparable to the course's binarized-MNIST table; binarized ``digits`` at ``tiny``). Flows are not
run on the binarized data: uniform dequantization of two levels makes their bound a poor fit, and
the binarized table compares the exact models. Each run goes through the one Trainer (batch 64,
the model's default learning rate, warm-up and cosine decay over the steps; ``small``: 60 steps
per run, enough to rank the models' first minutes but not their trained quality, which is what
``benchmarks/fixed_budget.py``'s 8-minute table is for; ``full``: 1,000), then:

- **test bits/dim** on the first :func:`scored_images` test images (``small``: 500; ``tiny`` and
  ``full``: the whole test split): exact for autoregressive models, the one-sample uniform
  dequantization bound for flows (the ``bound`` column says which);
- **parameters**, **steps** and **train images/s** (steps x 64 / seconds spent in optimizer steps);
- **sample 16 (s)**: the wall-clock time to draw 16 images from the model reloaded from the run's
  ``model.safetensors`` (:func:`densitylab.train.checkpoint.model_from_checkpoint`): the checkpoint
  round trip is part of what is exercised. Samples are drawn at temperature 1; where a flow's
  inverse overflows on some draws (a Glow after a few hundred steps maps a quarter of its prior's
  tail to infinity), the draw is repeated at Glow's sampling temperature
  :data:`FALLBACK_TEMPERATURE` = 0.7 (Kingma & Dhariwal's figures use 0.7), and the table's
  ``sample T`` column and the verdict say so.

Models and options per budget: ``small`` and ``full`` use every model's registered defaults
(what ``densitylab train MODEL`` gives a user); ``tiny`` (the tests: ``digits`` 8x8, 0.5 s each, one
thread) uses the small networks of :data:`TINY_OPTIONS`; the ``options`` column records them.
At the ``small`` budget (a 2-core CPU, 28x28) FFJORD is left out and listed in the record with the
reason: its every training step solves an ODE through a conv net forward and backward (about 15 s
per batch of 64 on 2 cores when this experiment was written: a handful of steps in the budget). It
runs at ``tiny`` (8x8) and ``full`` (a GPU). IAF runs at every budget: its density is ``D``
sequential steps per transform, but the cached masked MLP computes each hidden unit once over
them (about 0.3-0.5 s per training step on 2 cores at 28x28). Finishing a run does not call
``Trainer.finish`` (it scores the whole test split, which would cost minutes for the slow models on
a CPU); it evaluates the fixed subset instead.

The tables give each model's mean test bits/dim over the seeds and its standard deviation, best
first; the sentence names the best model of each table and any run that failed. A leaderboard
measures, it does not test a claim about which model wins: its outcome is ``measurement``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from densitylab.config import RunConfig
from densitylab.errors import DensitylabError
from densitylab.experiments.base import (
    epochs_for,
    experiment,
    figure,
    image_data,
    seed_list,
    step_count,
    table,
)
from densitylab.experiments.base import threads as restored_threads
from densitylab.experiments.verdict import MEASUREMENT, mean_sd
from densitylab.models.registry import available_models, build_model
from densitylab.train import checkpoint as ckpt
from densitylab.train.files import atomic_write_json
from densitylab.viz.figures import save_png
from densitylab.viz.grid import image_grid, save_grid

SAMPLES = 16
FALLBACK_TEMPERATURE = 0.7  # a flow whose draws overflow at T = 1 is sampled again at Glow's T
BATCH_SIZE = 64
FLOW_BOUND = "dequantization bound"

# Small networks for the tests' tiny budget (8x8 digits, about a second of training each).
TINY_OPTIONS: dict[str, dict[str, Any]] = {
    "pixelcnn": {"hidden_channels": 16, "n_residual_blocks": 2, "output_hidden": 16, "first_kernel": 5},
    "gated_pixelcnn": {"hidden_channels": 16, "skip_channels": 16, "output_hidden": 16, "n_layers": 3,
                       "first_kernel": 5},
    "wavenet": {"residual_channels": 16, "skip_channels": 16, "output_hidden": 16, "layers_per_block": 6},
    "rnn": {"hidden_size": 32},
    "made": {"hidden_sizes": [128]},
    "realnvp": {"n_scales": 2, "couplings_per_mask": 2, "final_couplings": 2, "hidden_channels": 16},
    "nice": {"hidden_features": 64, "hidden_layers": 2},
    "glow": {"n_scales": 2, "steps_per_scale": 2, "hidden_channels": 16},
    "maf": {"n_transforms": 2, "hidden_sizes": [64]},
    "iaf": {"n_transforms": 2, "hidden_sizes": [64]},
    "ffjord": {"hidden_channels": 8, "rtol": 1e-3, "atol": 1e-3},
}

# Left out where training on 28x28 images does not fit a CPU budget (see the module docstring).
TOO_SLOW_ON_A_CPU: dict[str, str] = {
    "ffjord": "every training step solves an ODE (dopri5, rtol {rtol:g}) through a conv net forward and "
              "backward: about 15 s per batch of 64 on 2 CPU cores, a handful of steps in the budget",
}


def image_models() -> list[str]:
    """Registered models that take images: autoregressive ones first, then flows, by name."""
    models = [info for info in available_models().values() if "image" in info.data_kinds]
    return [m.name for m in sorted(models, key=lambda m: (m.family != "autoregressive", m.name))]


def model_options(model: str, budget: str) -> dict[str, Any]:
    """The model options of a budget: the small networks at ``tiny``, the defaults otherwise."""
    return dict(TINY_OPTIONS.get(model, {})) if budget == "tiny" else {}


def left_out(budget: str, shape: tuple[int, ...], levels: int) -> dict[str, tuple[int, str]]:
    """``{model: (parameters, reason)}`` for the models not run at ``budget`` (only ``small``)."""
    if budget != "small":
        return {}
    found = {}
    for name, reason in TOO_SLOW_ON_A_CPU.items():
        if name not in available_models():
            continue
        model = build_model(name, shape, levels, {})
        config = model.config_dict()
        dim = math.prod(shape)
        transforms = config.get("n_transforms", 1)
        text = reason.format(passes=dim * transforms, dim=dim, transforms=transforms,
                             rtol=config.get("rtol", 0.0))
        found[name] = (sum(p.numel() for p in model.parameters()), text)
    return found


def scored_images(budget: str) -> int | None:
    """Test images scored per model: a fixed subset at ``small`` (the CPU budget), else all."""
    return 500 if budget == "small" else None


def measure(run_dir: Path, model: str, data: str, steps: int, seed: int = 0,
            options: dict[str, Any] | None = None, n_bits: int | None = None,
            n_test: int | None = None, threads: int | None = None) -> dict[str, Any]:
    """Train ``model`` for ``steps`` optimizer steps into ``run_dir`` and measure it (one
    leaderboard row).

    Returns ``model``, ``family``, ``bits_per_dim``, ``bound``, ``parameters``, ``steps``,
    ``images_per_s``, ``sample_seconds``, ``samples`` (a ``(16, C, H, W)`` tensor), ``levels``,
    ``test_images`` and ``error`` (``None``, or what failed: a failed draw keeps the score)."""
    from densitylab.train.rundir import CHECKPOINT_FILE, MODEL_FILE, RESULTS_FILE, SAMPLES_FILE
    from densitylab.train.trainer import Trainer

    row: dict[str, Any] = {"model": model, "options": dict(options or {}),
                           "bits_per_dim": math.nan,
                           "bound": "", "parameters": 0, "steps": 0, "images_per_s": 0.0,
                           "sample_seconds": math.nan, "samples": None, "levels": 0, "test_images": 0,
                           "sample_temperature": None, "sample_note": None,
                           "family": available_models()[model].family, "error": None}
    config = RunConfig(model=model, model_config=dict(options or {}), data=data, n_bits=n_bits,
                       epochs=epochs_for(steps, data, BATCH_SIZE, n_bits), seed=seed,
                       batch_size=BATCH_SIZE,
                       eval_every=10**9, checkpoint_every=10**9, sample_count=0, threads=threads)
    try:
        trainer = Trainer(config.validate(), run_dir, force=True, progress=False)
        trainer.train_loop()
        state = trainer.state
        row.update(
            parameters=sum(p.numel() for p in trainer.model.parameters()), steps=state.step,
            images_per_s=state.step * BATCH_SIZE / state.train_seconds if state.train_seconds else 0.0,
            levels=trainer.data.levels, test_images=min(n_test or len(trainer.data.test),
                                                        len(trainer.data.test)),
            bits_per_dim=trainer.evaluate(n_test),
            bound="exact" if trainer.model.family == "autoregressive" else FLOW_BOUND)
        trainer.save_model()
        (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # training state: no resume here
        device = trainer.device
        trainer.close()
        del trainer
    except Exception as exc:  # one failing model must not cost the others' runs
        row["error"] = f"training failed: {type(exc).__name__}: {exc}"
        return row
    bpd = row["bits_per_dim"]
    errors = [] if math.isfinite(bpd) else [f"non-finite test bits/dim ({bpd})"]
    try:
        row["samples"], row["sample_seconds"], row["sample_temperature"], row["sample_note"] = \
            draw_with_fallback(run_dir / MODEL_FILE, device, seed)
        save_grid(run_dir / SAMPLES_FILE, row["samples"], row["levels"], nrow=4)
    except Exception as exc:
        errors.append(f"sampling failed: {type(exc).__name__}: {exc}")
    row["error"] = "; ".join(errors) or None
    atomic_write_json(run_dir / RESULTS_FILE, {k: None if isinstance(v, float) and not math.isfinite(v) else v
                                               for k, v in row.items() if k != "samples"})
    return row


def draw_with_fallback(path: Path, device: torch.device, seed: int,
                       n: int = SAMPLES) -> tuple[torch.Tensor, float, float, str | None]:
    """:func:`draw` at temperature 1; if a flow's draws come out non-finite, again at
    :data:`FALLBACK_TEMPERATURE`. Returns samples, seconds, the temperature used and a note."""
    try:
        return (*draw(path, device, seed, n), 1.0, None)
    except DensitylabError as exc:
        if "non-finite" not in str(exc):
            raise
        samples, elapsed = draw(path, device, seed, n, FALLBACK_TEMPERATURE)
        failed = str(exc).split(" samples came out")[0]
        return samples, elapsed, FALLBACK_TEMPERATURE, f"at T = 1, {failed} draws overflowed"


def draw(path: Path, device: torch.device, seed: int, n: int = SAMPLES,
         temperature: float = 1.0) -> tuple[torch.Tensor, float]:
    """Reload the model from ``path`` and time drawing ``n`` images; checks they are valid data."""
    model, _ = ckpt.model_from_checkpoint(path, device=device)
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    with torch.no_grad():
        samples = model.sample(n, generator=generator, temperature=temperature).cpu()
    elapsed = time.perf_counter() - started
    expected = (n, *model.shape)
    if tuple(samples.shape) != expected:
        raise ValueError(f"samples of shape {tuple(samples.shape)}, expected {expected}")
    if samples.dtype.is_floating_point or int(samples.min()) < 0 or int(samples.max()) >= model.levels:
        raise ValueError(f"samples are not integers in 0..{model.levels - 1}")
    return samples, elapsed


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by test bits/dim, lowest first; failed runs (no finite score) last."""
    return sorted(rows, key=lambda r: (not math.isfinite(r["bits_per_dim"]), r["bits_per_dim"]
                                       if math.isfinite(r["bits_per_dim"]) else 0.0, r["model"]))


COLUMNS = ["rank", "model", "family", "test bits/dim", "sd over seeds", "bound", "parameters", "steps",
           "train images/s",
           f"sample {SAMPLES} (s)", "sample T", "options", "error"]


def table_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for i, r in enumerate(ranked(rows), 1):
        finite = math.isfinite(r["bits_per_dim"])
        options = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "defaults"
        out.append([i if finite else None, r["model"], r["family"],
                    round(r["bits_per_dim"], 4) if finite else None,
                    round(r.get("bits_per_dim_sd", 0.0), 4) if finite else None, r["bound"],
                    r["parameters"],
                    r["steps"], round(r["images_per_s"], 1),
                    round(r["sample_seconds"], 3) if math.isfinite(r["sample_seconds"]) else None,
                    r["sample_temperature"], options,
                    "; ".join(filter(None, [r["error"], r["sample_note"]]))])
    return out


def plot_samples(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """One panel per model (in leaderboard order): a 4x4 grid of its samples and its score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ranked(rows)
    ncol = min(len(rows), 5)
    nrow = math.ceil(len(rows) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.3 * ncol, 2.6 * nrow + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, r in zip(axes.flat, rows, strict=False):
        if r["samples"] is not None:
            grid = image_grid(r["samples"], r["levels"], nrow=4)
            ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255,
                      interpolation="nearest")
        else:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", fontsize=9, color="#d1495b")
        score = f"{r['bits_per_dim']:.3f} bits/dim" if math.isfinite(r["bits_per_dim"]) else "failed"
        ax.set_title(f"{r['model']}\n{score}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.75 / fig.get_figheight(),
                        wspace=0.08, hspace=0.35)  # (tight_layout costs seconds with many panels)
    save_png(fig, path, dpi=100)


def plot_tradeoff(path: Path, groups: dict[str, list[dict[str, Any]]]) -> None:
    """Test bits/dim against train images/s (log scale), one marker per run, labelled by model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(5.6 * len(groups), 4.2), squeeze=False)
    for ax, (label, rows) in zip(axes[0], groups.items(), strict=True):
        for r in rows:
            if not (math.isfinite(r["bits_per_dim"]) and r["images_per_s"] > 0):
                continue
            marker = "o" if r["family"] == "autoregressive" else "s"
            colour = "#3b6fb6" if r["family"] == "autoregressive" else "#d1495b"
            ax.scatter(r["images_per_s"], r["bits_per_dim"], marker=marker, color=colour)
            ax.annotate(r["model"], (r["images_per_s"], r["bits_per_dim"]), fontsize=8,
                        xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("train images/s")
        ax.set_ylabel("test bits/dim (lower is better)")
        ax.set_title(f"{label} (circles: autoregressive, exact; squares: flows, bound)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, dpi=110)


def best_text(rows: list[dict[str, Any]]) -> str:
    scored = [r for r in ranked(rows) if math.isfinite(r["bits_per_dim"])]
    if not scored:
        return "no model scored"
    best = scored[0]
    bound = "exact" if best["bound"] == "exact" else "a dequantization bound"
    return f"{best['model']} with {best['bits_per_dim']:.3f} bits/dim ({bound}, {best['steps']} steps)"


@experiment("leaderboard", "Every image model on Fashion-MNIST 8-bit (and binarized) at the same budget: "
            "bits/dim, parameters, train images/s, sample time", timed=True)
def run_leaderboard(out: Path, budget: str, seed: int) -> dict[str, Any]:
    with restored_threads():  # a tiny run sets one thread process-wide: give the caller its own back
        return leaderboard(out, budget, seed)


def leaderboard(out: Path, budget: str, seed: int) -> dict[str, Any]:
    from densitylab.data import load_dataset

    data, binary_data = image_data(budget), binarized_data(budget)
    steps, seeds = step_count(budget, tiny=3, small=60), seed_list(budget, seed)
    n_test = scored_images(budget)
    threads = 1 if budget == "tiny" else None  # tiny networks: one thread is faster, by far under load
    native = load_dataset(data)
    skipped = left_out(budget, native.shape, native.levels)
    models = [m for m in image_models() if m not in skipped]
    autoregressive = [m for m in models if available_models()[m].family == "autoregressive"]
    native_label, binary_label = f"{data}, {native.levels} levels", f"{binary_data}, binarized"
    per_seed: dict[str, list[list[dict[str, Any]]]] = {native_label: [], binary_label: []}
    for s in seeds:
        per_seed[native_label].append([
            measure(out / "runs" / f"seed{s}" / model, model, data, steps, s,
                    model_options(model, budget), None, n_test, threads) for model in models])
        per_seed[binary_label].append([
            measure(out / "runs" / f"seed{s}" / f"{model}-binarized", model, binary_data, steps, s,
                    model_options(model, budget), 1, n_test, threads) for model in autoregressive])
    groups = {label: averaged(runs) for label, runs in per_seed.items()}
    first = {label: runs[0] for label, runs in per_seed.items()}
    plot_samples(out / "samples_native.png", first[native_label],
                 f"{SAMPLES} samples per model (seed {seeds[0]}), {native_label}, {steps} steps each")
    plot_samples(out / "samples_binarized.png", first[binary_label],
                 f"{SAMPLES} samples per model (seed {seeds[0]}), {binary_label}, {steps} steps each")
    plot_tradeoff(out / "tradeoff.png", groups)

    runs = [r for rows in per_seed.values() for seed_rows in rows for r in seed_rows]
    failed = sorted({f"{r['model']}{' (binarized)' if label == binary_label else ''}: {r['error']}"
                     for label, rows in per_seed.items() for seed_rows in rows for r in seed_rows
                     if r["error"]})
    test_note = f"first {n_test:,}" if n_test else "all"
    verdict = (f"Trained {steps} steps each, {len(seeds)} seeds: the best mean on {native_label} is "
               f"{best_text(groups[native_label])}, and on {binary_label} "
               f"{best_text(groups[binary_label])}; "
               f"{sum(not r['error'] for r in runs)} of {len(runs)} runs "
               f"trained and drew {SAMPLES} valid samples"
               + (f" (failed: {'; '.join(failed)})" if failed else "")
               + "".join(f"; {r['model']} sampled at T = {r['sample_temperature']:g} ({r['sample_note']})"
                         for r in first[native_label] if r["sample_note"])
               + (f"; left out at this budget: {', '.join(skipped)}" if skipped else "") + ".")
    tables = [
        table(f"{native_label}: test bits/dim ({test_note} test images) after {steps} steps each, mean "
              f"over {len(seeds)} seeds, best first", COLUMNS, table_rows(groups[native_label])),
        table(f"{binary_label} (autoregressive models, exact; comparable to the course's binarized "
              f"MNIST column): test bits/dim ({test_note} test images) after {steps} steps each, "
              f"mean over {len(seeds)} seeds, best first", COLUMNS, table_rows(groups[binary_label])),
    ]
    if skipped:
        tables.append(table("Image models left out at this budget", ["model", "parameters (defaults)",
                                                                      "reason"],
                            [[name, params, reason] for name, (params, reason) in skipped.items()]))
    return {
        "rule": ("A measurement, not a test: a leaderboard names no winner in advance, so there is "
                 "no verdict; every model trains the same number of steps with the same seeds."),
        "outcome": MEASUREMENT,
        "verdict": verdict,
        "seeds": seeds,
        "steps": {f"{label}/{r['model']}": steps for label, rows in groups.items() for r in rows},
        "data": f"{data} ({native.levels} levels, {len(native.train):,} train / {len(native.test):,} test "
                f"images; scored on {test_note} test images) and {binary_data} binarized (n_bits=1)",
        "tables": tables,
        "figures": [
            figure("samples_native.png", f"{SAMPLES} samples from every model ({native_label}, first "
                   "seed), best bits/dim first."),
            figure("samples_binarized.png", f"{SAMPLES} samples from every autoregressive model "
                   f"({binary_label}, first seed), best bits/dim first."),
            figure("tradeoff.png", "Test bits/dim (mean over seeds) against training throughput: "
                   "what each model buys with the same steps."),
        ],
    }


def binarized_data(budget: str) -> str:
    """The binarized column's data: ``mnist5k`` (real MNIST digits, as in the course's binarized
    MNIST table), ``digits`` at the tiny budget."""
    return "digits" if budget == "tiny" else "mnist5k"


def averaged(per_seed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per model: the first seed's row with bits/dim, its sd, images/s and sample time
    averaged over the seeds (non-finite scores propagate)."""
    rows = []
    for k, first in enumerate(per_seed[0]):
        same = [seed_rows[k] for seed_rows in per_seed]
        scores = [r["bits_per_dim"] for r in same]
        finite = all(math.isfinite(v) for v in scores)
        rows.append({**first, "bits_per_dim": sum(scores) / len(scores) if finite else math.nan,
                     "bits_per_dim_sd": mean_sd(scores)[1] if finite else math.nan,
                     "images_per_s": sum(r["images_per_s"] for r in same) / len(same),
                     "sample_seconds": sum(r["sample_seconds"] for r in same) / len(same),
                     "error": "; ".join(sorted({r["error"] for r in same if r["error"]})) or None})
    return rows
