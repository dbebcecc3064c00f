"""Autoregressive flow (MAF) against inverse autoregressive flow (IAF): training and sampling cost
as the dimension ``D`` grows.

Claim: autoregressive flows train fast and sample slowly, inverse autoregressive flows the
opposite; the slow direction is ``D`` sequential steps, so the gap grows with the number of
dimensions. MAF evaluates ``log p(x)`` in one MADE pass per transform and samples in ``D`` steps;
IAF is the same stack used the other way round (``iaf.py``), so its density takes ``D`` steps per
transform and its samples one pass. (The course says "linearly in D": with a full network pass
per step that is what one sees; densitylab's cached masked MLP makes each step cost about ``1/D``
of a pass, so the slow direction's time grows more slowly than ``D``, but it still grows and it
is still ``D`` steps that cannot run in parallel.)

Measured, for each ``D`` (continuous vectors of shape ``(D,)``, ``levels = 0``, no preprocessing):
a MAF and an IAF with the same weights (the IAF's inner stack is loaded with the MAF's, the MAF's
weights first moved off their identity start), two hidden layers of the same width at every ``D``
(so a network pass costs about the same and the number of passes is what differs), on one CPU
thread:

- **training step**: forward and backward of ``-log_prob(x).mean()`` on a batch of standard-normal
  points (no optimizer update);
- **sampling**: ``model.sample(n)``.

MAF sampling and IAF density stay ``D`` sequential steps per transform (the table's "sequential
steps"), but each step evaluates the masked MLP incrementally (``method="cached"``, the default:
every hidden unit computed once over the ``D`` steps); "MAF sample (naive)" times the same samples
with a full network pass per step.

Each time is the median of a few repeats after a warm-up, or the warm-up alone when one call
already takes longer than the timing budget (the slow cases at large ``D``). Slopes are
least-squares fits of ``log time`` (or ``log ratio``) on ``log D``; each seed builds other weights
and data and times them again. Verdict (a claim about time, so measured in time): four threshold
rules over the seeds, all of which must hold -- at the largest ``D`` IAF's training step is slower
than MAF's (log ratio above 0) and its sampling faster (log ratio below 0), and the two ratios
move apart as ``D`` grows (the training ratio's log-log slope above 0, the sampling ratio's below
0; strictly linear in ``D`` would be +-1).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from densitylab.experiments.base import (
    experiment,
    figure,
    save_band_plot,
    seed_list,
    table,
    threads,
)
from densitylab.experiments.verdict import ThresholdRule, combine, plus_minus
from densitylab.models.flows.autoregressive import set_method
from densitylab.models.registry import build_model
from densitylab.viz.curves import save_line_plot

SETTINGS: dict[str, dict[str, Any]] = {
    "tiny": {"dims": (2, 4, 8), "hidden": 16, "transforms": 2, "batch": 32, "samples": 32,
             "repeats": 3, "budget": 0.2},
    "small": {"dims": (2, 8, 32, 128, 512), "hidden": 128, "transforms": 2, "batch": 64,
              "samples": 64, "repeats": 5, "budget": 2.0},
    "full": {"dims": (2, 8, 32, 128, 512, 1024), "hidden": 256, "transforms": 5, "batch": 64,
             "samples": 64, "repeats": 5, "budget": 5.0},
}


def timed(fn: Callable[[], object], repeats: int, budget_s: float) -> float:
    """Median seconds of ``fn`` over up to ``repeats`` calls after one warm-up call, stopping once
    ``budget_s`` is spent; the warm-up's own time if it alone took longer than ``budget_s``."""
    started = time.perf_counter()
    fn()
    warmup = time.perf_counter() - started
    if warmup > budget_s:
        return warmup
    times: list[float] = []
    while len(times) < repeats and sum(times) < budget_s:
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def twin_flows(dim: int, hidden: int, transforms: int, seed: int = 0) -> tuple[Any, Any]:
    """A MAF and an IAF on ``(dim,)`` continuous vectors holding the same transform stack."""
    config = {"n_transforms": transforms, "hidden_sizes": [hidden, hidden]}
    torch.manual_seed(seed)
    maf = build_model("maf", (dim,), 0, config)
    iaf = build_model("iaf", (dim,), 0, config)
    with torch.no_grad():  # leave the identity start: every layer holds random weights
        for p in maf.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    iaf.transform.inner.load_state_dict(maf.transform.state_dict())
    return maf, iaf


def training_step(model: Any, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        model.zero_grad(set_to_none=True)
        (-model.log_prob(x).mean()).backward()

    return run


def sampling(model: Any, n: int, generator: torch.Generator) -> Callable[[], None]:
    def run() -> None:
        model.sample(n, generator=generator)

    return run


def warm_up() -> None:
    """Pay torch's one-time costs (the first ``autograd.grad``, used by IAF's backward pass, imports
    modules for about a second) before anything is timed."""
    maf, iaf = twin_flows(2, 4, 1)
    for model in (maf, iaf):
        training_step(model, torch.randn(4, 2))()
        model.sample(2)


def measure(dim: int, settings: dict[str, Any], seed: int = 0) -> dict[str, float]:
    """Milliseconds of a training step and of sampling for MAF and IAF at ``dim``, and the ratios."""
    maf, iaf = twin_flows(dim, settings["hidden"], settings["transforms"], seed)
    x = torch.randn(settings["batch"], dim, generator=torch.Generator().manual_seed(seed))
    generator = torch.Generator().manual_seed(seed)
    row: dict[str, float] = {"D": dim}
    for name, model in (("maf", maf), ("iaf", iaf)):
        row[f"{name}_step_ms"] = 1e3 * timed(training_step(model, x), settings["repeats"],
                                             settings["budget"])
        row[f"{name}_sample_ms"] = 1e3 * timed(sampling(model, settings["samples"], generator),
                                               settings["repeats"], settings["budget"])
    set_method(maf, "naive")
    row["maf_sample_naive_ms"] = 1e3 * timed(sampling(maf, settings["samples"], generator),
                                             settings["repeats"], settings["budget"])
    set_method(maf, "cached")
    row["sequential_steps"] = dim  # per transform, for MAF sampling and IAF density
    row["step_ratio"] = row["iaf_step_ms"] / row["maf_step_ms"]
    row["sample_ratio"] = row["iaf_sample_ms"] / row["maf_sample_ms"]
    return row


def log_log_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``log y`` on ``log x``."""
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    spread = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / spread


def slopes(rows: list[dict[str, float]]) -> dict[str, float]:
    dims = [r["D"] for r in rows]
    keys = ("maf_step_ms", "iaf_step_ms", "maf_sample_ms", "iaf_sample_ms", "step_ratio", "sample_ratio")
    return {key: log_log_slope(dims, [r[key] for r in rows]) for key in keys}


@experiment("af-vs-iaf", "Autoregressive flows train fast and sample slowly, inverse autoregressive "
            "flows the opposite; the slow direction is D sequential steps, so the gap grows with D",
            timed=True)
def run_af_vs_iaf(out: Path, budget: str, seed: int) -> dict[str, Any]:
    settings, seeds = SETTINGS[budget], seed_list(budget, seed)
    with threads(1):
        warm_up()
        per_seed = [[measure(dim, settings, s) for dim in settings["dims"]] for s in seeds]
    fits = [slopes(rows) for rows in per_seed]
    rows = per_seed[0]  # the figures and the first table: the first seed
    fit = fits[0]
    save_line_plot(out / "af_vs_iaf_times.png", {
        "MAF training step": [[r["D"], r["maf_step_ms"]] for r in rows],
        "IAF training step": [[r["D"], r["iaf_step_ms"]] for r in rows],
        "MAF sampling": [[r["D"], r["maf_sample_ms"]] for r in rows],
        "MAF sampling (naive: a full pass per step)": [[r["D"], r["maf_sample_naive_ms"]] for r in rows],
        "IAF sampling": [[r["D"], r["iaf_sample_ms"]] for r in rows],
    }, "dimension D", "milliseconds", f"MAF vs IAF ({settings['transforms']} transforms, MADE "
       f"{settings['hidden']}-{settings['hidden']}, batch {settings['batch']}, 1 CPU thread)",
        logx=True, logy=True)
    save_band_plot(out / "af_vs_iaf_ratios.png", {
        "IAF / MAF, training step": [[[r["D"], r["step_ratio"]] for r in rs] for rs in per_seed],
        "IAF / MAF, sampling": [[[r["D"], r["sample_ratio"]] for r in rs] for rs in per_seed],
    }, "dimension D", "time ratio IAF / MAF",
        f"IAF/MAF time ratios, mean +- sd over {len(seeds)} seeds (log-log)", logx=True, logy=True)
    step_slopes = [f["step_ratio"] for f in fits]
    sample_slopes = [f["sample_ratio"] for f in fits]
    step_logs = [math.log(rs[-1]["step_ratio"]) for rs in per_seed]
    sample_logs = [math.log(rs[-1]["sample_ratio"]) for rs in per_seed]
    largest = rows[-1]["D"]
    rules = (ThresholdRule(f"the log of the IAF/MAF training-step time ratio at D = {largest:g}", 0.0,
                           below=False),
             ThresholdRule(f"the log of the IAF/MAF sampling time ratio at D = {largest:g}", 0.0),
             ThresholdRule("the log-log slope of the IAF/MAF training-step time ratio against D",
                           0.0, below=False),
             ThresholdRule("the log-log slope of the IAF/MAF sampling time ratio against D", 0.0))
    outcomes = [rule.judge(values, budget) for rule, values in
                zip(rules, (step_logs, sample_logs, step_slopes, sample_slopes), strict=True)]
    outcome = combine(outcomes)
    first, last = rows[0], rows[-1]
    verdict = (
        f"From D = {first['D']:g} to {last['D']:g} (sequential steps per transform of MAF sampling "
        f"and IAF density: {first['D']:g} to {last['D']:g}; of the other two: 1) the IAF/MAF "
        f"training-step time ratio goes from {first['step_ratio']:.2f} to {last['step_ratio']:.1f} "
        f"(first seed; log at D = {largest:g} over {len(seeds)} seeds {plus_minus(step_logs, 2)}: "
        f"{outcomes[0]}), its log-log slope is {plus_minus(step_slopes, 2)} ({outcomes[2]}); the "
        f"sampling ratio goes from {first['sample_ratio']:.2f} to {last['sample_ratio']:.4f} (log "
        f"{plus_minus(sample_logs, 2)}: {outcomes[1]}), slope {plus_minus(sample_slopes, 2)} "
        f"({outcomes[3]}). With the cached masked MLP the slopes are below the +-1 of a full pass "
        "per step; MAF's naive sampler (one full pass per step) is in the table for comparison.")
    seed_rows = [[s, round(f["step_ratio"], 3), round(f["sample_ratio"], 3)]
                 for s, f in zip(seeds, fits, strict=True)]
    return {
        "rule": ("A claim about time, so it is measured in time (no training: each seed builds "
                 "other weights and data and times them). Four parts must hold: at the largest D "
                 "the training-step ratio's log above 0 and the sampling ratio's below 0, and the "
                 "two ratios' log-log slopes against D above 0 and below 0. Each: "
                 + rules[0].text()),
        "outcome": outcome,
        "verdict": verdict,
        "seeds": seeds,
        "steps": {},
        "data": f"standard-normal vectors of dimension D = {', '.join(str(d) for d in settings['dims'])} "
                f"(batch {settings['batch']}; {settings['samples']} samples per sampling call)",
        "tables": [
            table("Log-log slopes of the IAF/MAF time ratios against D, per seed",
                  ["seed", "training-step ratio slope", "sampling ratio slope"], seed_rows),
            table("First seed: milliseconds per training step (forward + backward of -log_prob) and "
                  "per sampling call, median of repeats; sequential steps per transform of MAF "
                  "sampling and IAF density (the other two: 1)",
                  ["D", "sequential steps", "MAF step", "IAF step", "IAF/MAF step", "MAF sample",
                   "MAF sample (naive)", "IAF sample", "IAF/MAF sample"],
                  [[int(r["D"]), int(r["sequential_steps"]), round(r["maf_step_ms"], 2),
                    round(r["iaf_step_ms"], 2), round(r["step_ratio"], 3),
                    round(r["maf_sample_ms"], 2), round(r["maf_sample_naive_ms"], 2),
                    round(r["iaf_sample_ms"], 2), round(r["sample_ratio"], 4)] for r in rows]),
            table("First seed: log-log slopes against D (least squares; 1 = linear in D, 0 = "
                  "constant)",
                  ["quantity", "slope"],
                  [[key.replace("_ms", " time").replace("_", " "), round(value, 3)]
                   for key, value in fit.items()]),
        ],
        "figures": [
            figure("af_vs_iaf_times.png", "Training-step and sampling times against D (log-log): "
                   "MAF's sampling and IAF's training step grow with D, the other two stay flat."),
            figure("af_vs_iaf_ratios.png", "IAF/MAF time ratios against D (log-log), mean over "
                   "seeds with a +- sd band."),
        ],
    }
