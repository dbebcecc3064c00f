"""What an experiment is: one claim of the course notes, a run that measures it, and the record
(``results.json``) that the report renders.

An experiment is a function ``run(out, budget, seed) -> dict`` registered with :func:`experiment`
under a name and a claim. It writes its figures into ``out`` and returns:

- ``rule``: the verdict rule, stated before the result (the report prints it first; see
  :mod:`densitylab.experiments.verdict`);
- ``outcome``: ``reproduced``, ``direction only``, ``not reproduced``, ``inconclusive``,
  ``inconclusive (budget too small)``, or ``measurement`` where there is no claim to test;
- ``verdict``: one sentence saying what was measured (means +- standard deviations over seeds);
- ``seeds``: the seeds every arm ran (:func:`seed_list`: 2 at ``tiny``, 3 at ``small``, 5 at
  ``full``, starting at ``--seed``);
- ``steps``: ``{arm: optimizer steps}``; every seed of an arm trains exactly that many, and arms
  that are compared train the same number (so the verdict does not depend on machine load);
- ``data``: the data it used, in words;
- ``tables``: ``[{"title", "columns", "rows"}]`` -- the numbers, straight from the runs;
- ``figures``: ``[{"file", "caption"}]`` -- files inside ``out``.

:func:`run_experiment` adds the name, claim, budget, the command that reproduces it, the elapsed
time and ``reproduced`` (``True`` / ``False`` for the two firm outcomes, else ``None``), checks the
record, and writes ``results.json`` atomically. The ``tiny`` budget is a smoke test (seconds, the
tests) and its outcome is never ``reproduced``. Budgets: ``tiny`` (seconds), ``small`` (a 2-core
CPU: every experiment in under 90 minutes), ``full`` (a GPU; ten times ``small``'s steps).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from densitylab.config import RunConfig
from densitylab.errors import DensitylabError
from densitylab.experiments.verdict import OUTCOMES, REPRODUCED, TOO_SMALL, reproduced_flag
from densitylab.train.files import atomic_write_json
from densitylab.train.rundir import METRICS_FILE, RESULTS_FILE
from densitylab.viz.figures import save_png

BUDGETS = ("tiny", "small", "full")

SEED_COUNT = {"tiny": 2, "small": 3, "full": 5}

RunFn = Callable[[Path, str, int], dict[str, Any]]


@dataclass(frozen=True)
class Experiment:
    name: str
    claim: str
    run: RunFn
    timed: bool = False  # measures wall-clock time: runs alone, with every core


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str, claim: str, timed: bool = False) -> Callable[[RunFn], RunFn]:
    """Register ``run(out, budget, seed) -> record`` as experiment ``name``; ``timed``: it
    measures wall-clock time, so ``experiment all`` runs it alone."""

    def register(run: RunFn) -> RunFn:
        EXPERIMENTS[name] = Experiment(name, claim, run, timed)
        return run

    return register


def table(title: str, columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"title": title, "columns": columns, "rows": rows}


def figure(file: str, caption: str) -> dict[str, str]:
    return {"file": file, "caption": caption}


def check_record(record: dict[str, Any], out: Path) -> None:
    """Raise ``ValueError`` if ``record`` lacks a field the report needs, names a missing figure,
    claims ``reproduced`` at the tiny budget or ran too few seeds."""
    for key, kind in (("verdict", str), ("rule", str), ("outcome", str), ("data", str),
                      ("tables", list), ("figures", list), ("seeds", list), ("steps", dict)):
        if not isinstance(record.get(key), kind):
            raise ValueError(f"experiment record needs {key!r} ({kind.__name__})")
    if record["outcome"] not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {record['outcome']!r}")
    budget = record.get("budget", "small")
    if budget == "tiny" and record["outcome"] == REPRODUCED:
        raise ValueError("the tiny budget is a smoke test: its outcome is never 'reproduced'")
    if len(record["seeds"]) < SEED_COUNT.get(budget, 1):
        raise ValueError(f"budget {budget} needs {SEED_COUNT[budget]} seeds, got {record['seeds']}")
    if record.get("reproduced") not in (True, False, None):
        raise ValueError("'reproduced' must be true, false or null")
    for t in record["tables"]:
        if not t["rows"] or any(len(row) != len(t["columns"]) for row in t["rows"]):
            raise ValueError(f"table {t['title']!r}: every row needs one value per column")
    for f in record["figures"]:
        if not (out / f["file"]).is_file():
            raise ValueError(f"figure {f['file']!r} was not written to {out}")


def smoke_outcome(outcome: str, budget: str) -> str:
    """The outcome as recorded: at the tiny budget (a smoke test) never ``reproduced``."""
    return TOO_SMALL if budget == "tiny" and outcome == REPRODUCED else outcome


def run_experiment(name: str, out: Path, budget: str = "small", seed: int = 0) -> dict[str, Any]:
    """Run experiment ``name`` into ``out`` and write ``out/results.json``; returns the record."""
    if name not in EXPERIMENTS:
        raise DensitylabError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    if budget not in BUDGETS:
        raise DensitylabError(f"--budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    if out.exists() and not out.is_dir():
        raise DensitylabError(f"{out} is a file; give --out a directory")
    out.mkdir(parents=True, exist_ok=True)
    spec = EXPERIMENTS[name]
    started = time.perf_counter()
    found = spec.run(out, budget, seed)
    outcome = smoke_outcome(found.get("outcome", ""), budget)
    record = {
        "experiment": name,
        "claim": spec.claim,
        "budget": budget,
        "seed": seed,
        "command": f"densitylab experiment {name} --budget {budget} --seed {seed} --out {out}",
        **found,
        "outcome": outcome,
        "reproduced": reproduced_flag(outcome),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    check_record(record, out)
    atomic_write_json(out / RESULTS_FILE, record)
    return record


@contextmanager
def threads(n: int | None = None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (``None``: leave it), then restore the caller's count
    (the Trainer sets it process-wide). Tiny models run faster on one thread: on a shared 2-core CPU
    a second one only adds contention."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ks_distance(values: torch.Tensor, cdf: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Kolmogorov-Smirnov distance ``sup_t |F_n(t) - cdf(t)|`` between the empirical CDF of
    ``values`` and ``cdf`` (in float64)."""
    f = cdf(values.double().flatten().sort().values)
    n = f.numel()
    rank = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(rank / n - f, f - (rank - 1) / n).max())


# ----- helpers for experiments that train ------------------------------------------------------------
def image_data(budget: str) -> str:
    """The image dataset of a budget: scikit-learn's 8x8 ``digits`` for the tests (``tiny``),
    Fashion-MNIST 8-bit otherwise."""
    return "digits" if budget == "tiny" else "fashion-mnist"


def seconds(budget: str, small: float, full: float | None = None, tiny: float = 2.0) -> float:
    """Seconds at ``budget`` (``full``: ten times ``small`` unless given); for timings, not
    training (training is matched in steps: :func:`step_count`)."""
    return {"tiny": tiny, "small": small, "full": full if full is not None else 10 * small}[budget]


def step_count(budget: str, tiny: int, small: int, full: int | None = None) -> int:
    """Optimizer steps per run at ``budget`` (``full``: ten times ``small`` unless given)."""
    return {"tiny": tiny, "small": small, "full": full if full is not None else 10 * small}[budget]


def seed_list(budget: str, first: int) -> list[int]:
    """The seeds of a budget: :data:`SEED_COUNT` consecutive ones from ``first`` (``--seed``)."""
    return [first + k for k in range(SEED_COUNT[budget])]


@functools.lru_cache(maxsize=32)
def train_size(data: str) -> int:
    """Training examples of a named dataset (loaded once per process: some take seconds)."""
    from densitylab.data import load_dataset

    return len(load_dataset(data).train)


def epochs_for(steps: int, data: str, batch_size: int, n_bits: int | None = None) -> float:
    """The ``epochs`` setting that makes the Trainer stop after exactly ``steps`` steps (it runs
    ``ceil(epochs * steps_per_epoch)``; half a step below keeps float rounding from adding one)."""
    per_epoch = train_size(data) // batch_size
    if per_epoch < 1:
        raise DensitylabError(f"{data} has fewer training examples than one batch of {batch_size}")
    return (steps - 0.5) / per_epoch


TEST_IMAGES = 1000  # the final score of a run: its first test images (the same for every arm)


def train_run(out: Path, model: str, data: str, steps: int, seed: int = 0,
              model_config: dict[str, Any] | None = None, batch_size: int = 64,
              n_bits: int | None = None, test_images: int | None = TEST_IMAGES,
              **options: Any) -> dict[str, Any]:
    """Train ``model`` on ``data`` for exactly ``steps`` optimizer steps into ``out`` (a run
    directory, replaced if it exists) through the one Trainer, and score it on the first
    ``test_images`` test images (``None``: the whole test split); returns its ``results.json``
    plus ``curve`` (the logged ``(train seconds, train loss, step)`` and ``(step, test loss)``
    points) and ``images_per_s`` (images per second of optimizer steps)."""
    from densitylab.train.trainer import Trainer

    config = RunConfig(model=model, model_config=model_config or {}, data=data, n_bits=n_bits,
                       epochs=epochs_for(steps, data, batch_size, n_bits), seed=seed,
                       batch_size=batch_size, **options)
    with threads():  # the Trainer sets the thread count for the whole process
        trainer = Trainer(config.validate(), out, force=True, progress=False)
        if test_images is not None:  # the final score on a fixed subset (the whole split is slow)
            trainer.data = first_test_images(trainer.data, test_images)
        results = trainer.fit()
    return {**results, "curve": read_curve(out / METRICS_FILE),
            "images_per_s": results["steps"] * batch_size / max(results["train_seconds"], 1e-9)}


def first_test_images(data: Any, n: int) -> Any:
    """``data`` (an ``ImageData``) with its test split cut to its first ``n`` examples."""
    import dataclasses

    labels = data.test_labels[:n] if data.test_labels is not None else None
    return dataclasses.replace(data, test=data.test[:n], test_labels=labels)


def read_curve(path: Path) -> dict[str, list[list[float]]]:
    """``{"train": [[seconds, loss, step], ...], "test": [[step, loss], ...]}`` from
    ``metrics.jsonl`` (the periodic tests on the first test images, not the final whole-split one)."""
    train: list[list[float]] = []
    test: list[list[float]] = []
    lines = path.read_text().splitlines() if path.is_file() else []  # short runs may log nothing
    for line in lines:
        record = json.loads(line)
        for key, value in record.items():
            if key.startswith("train_") and key != "train_seconds" and isinstance(value, float):
                if math.isfinite(value):
                    train.append([record.get("train_seconds", 0.0), value, record["step"]])
            elif key.startswith("test_") and not key.endswith("_full") and isinstance(value, float):
                test.append([record["step"], value])
    return {"train": train, "test": test}


# ----- arms over seeds: tables and figures of the spread ---------------------------------------------
def arm_rows(arms: dict[str, list[dict[str, Any]]], score: str = "test_bits_per_dim",
             digits: int = 4) -> list[list[Any]]:
    """One row per arm: ``[arm, mean, sd, per-seed values, steps, mean train seconds, mean
    images/s, parameters]`` from each arm's runs (one per seed)."""
    from densitylab.experiments.verdict import mean_sd

    rows = []
    for label, runs in arms.items():
        values = [float(r[score]) for r in runs]
        mean, sd = mean_sd(values)
        rows.append([label, round(mean, digits), round(sd, digits),
                     ", ".join(f"{v:.{digits}f}" for v in values), runs[0]["steps"],
                     round(sum(r["train_seconds"] for r in runs) / len(runs), 1),
                     round(sum(r["images_per_s"] for r in runs) / len(runs), 1),
                     runs[0]["parameters"]])
    return rows


ARM_COLUMNS = ["arm", "mean", "sd", "per seed", "steps (each seed)", "train seconds (mean)",
               "train images/s (mean)", "parameters"]


def difference_row(label: str, gains: list[float], reference: float, digits: int = 4) -> list[Any]:
    """``[label, mean gain, sd, SE, mean gain / reference, per-seed gains]``."""
    from densitylab.experiments.verdict import mean_sd, standard_error

    mean, sd = mean_sd(gains)
    return [label, round(mean, digits), round(sd, digits), round(standard_error(gains), digits),
            round(mean / reference, 4) if reference else None,
            ", ".join(f"{g:.{digits}f}" for g in gains)]


DIFFERENCE_COLUMNS = ["paired gain", "mean", "sd", "SE", "relative to the other arm", "per seed"]


def save_seed_plot(path: Path, values: dict[str, list[float]], ylabel: str, title: str) -> None:
    """Each arm's per-seed values as dots, with its mean +- sd as a bar: the spread across seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from densitylab.experiments.verdict import mean_sd

    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(values) + 2), 3.8))
    for k, ys in enumerate(values.values()):
        mean, sd = mean_sd(ys)
        ax.errorbar([k], [mean], yerr=[sd], fmt="s", color="black", capsize=6, markersize=5)
        ax.scatter([k + 0.12] * len(ys), ys, color="#3b6fb6", s=14, zorder=3)
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(list(values), fontsize=8)
    ax.set_xlim(-0.6, len(values) - 0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(title + "\n(dots: seeds; square and bar: mean +- sd)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    save_png(fig, path, dpi=100)


def save_band_plot(path: Path, curves: dict[str, list[list[list[float]]]], xlabel: str,
                   ylabel: str, title: str, logx: bool = False, logy: bool = False) -> None:
    """One line per arm: the mean over seeds of ``[[x, y], ...]`` curves (taken at the same x, as
    step-matched runs are), with a band of +- one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from densitylab.experiments.verdict import mean_sd
    from densitylab.viz.curves import finish_plot

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, per_seed in curves.items():
        length = min((len(c) for c in per_seed), default=0)
        if not length:
            continue
        xs = [per_seed[0][i][0] for i in range(length)]
        stats = [mean_sd([c[i][1] for c in per_seed]) for i in range(length)]
        means = [m for m, _ in stats]
        line = ax.plot(xs, means, label=f"{label} ({len(per_seed)} seeds)",
                       marker="o" if length < 12 else None, markersize=3)[0]
        ax.fill_between(xs, [m - s for m, s in stats], [m + s for m, s in stats],
                        color=line.get_color(), alpha=0.2)
    finish_plot(fig, ax, path, xlabel, ylabel, title, logx, logy)


def paired_comparison(rule: Any, arms: dict[str, list[dict[str, Any]]], budget: str,
                      score: str = "test_bits_per_dim", title: str = "",
                      digits: int = 4) -> dict[str, Any]:
    """Judge ``rule`` (a :class:`~densitylab.experiments.verdict.PairedRule` naming two of the
    ``arms``, each a list of runs, one per seed, in the same seed order) and build its two tables:
    the arms (mean, sd, per seed, steps, speed) and the paired gain. Returns ``outcome``, ``gains``,
    ``values`` (per arm), ``tables`` and a ``summary`` sentence."""
    from densitylab.experiments.verdict import mean_sd, plus_minus

    values = {label: [float(r[score]) for r in runs] for label, runs in arms.items()}
    better, other = values[rule.better], values[rule.other]
    steps = [r["steps"] for label in (rule.better, rule.other) for r in arms[label]]
    outcome = rule.judge(better, other, budget, steps)
    gains = rule.gains(better, other)
    reference = abs(mean_sd(other)[0])
    gain_label = (f"{rule.other} - {rule.better}" if rule.lower_is_better
                  else f"{rule.better} - {rule.other}")
    tables = [table(title or f"{rule.measure}, one run per seed and arm", ARM_COLUMNS,
                    arm_rows(arms, score, digits)),
              table(f"Paired gain ({gain_label}, positive: the claim's direction)",
                    DIFFERENCE_COLUMNS, [difference_row(gain_label, gains, reference, digits)])]
    summary = (f"{rule.better} {plus_minus(better, digits)} vs {rule.other} "
               f"{plus_minus(other, digits)} {rule.measure} over {len(better)} seeds at "
               f"{arms[rule.better][0]['steps']} steps each; paired gain {plus_minus(gains, digits)} "
               f"({mean_sd(gains)[0] / reference:+.1%} of {rule.other})" if reference else "")
    return {"outcome": outcome, "gains": gains, "values": values, "tables": tables,
            "summary": summary}
