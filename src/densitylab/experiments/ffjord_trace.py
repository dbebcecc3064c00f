"""FFJORD's Hutchinson trace estimator and its function evaluations (Grathwohl et al. 2019,
sections 3.1 and 4.4).

Claims: (1) Hutchinson's estimator ``e^T (df/dz) e`` with ``E[e e^T] = I`` is an unbiased estimate
of ``tr(df/dz)``, costing one vector-Jacobian product instead of ``D`` backward passes; (2) with
Rademacher noise its variance is no larger than with Gaussian noise; and, as a measurement, the
adaptive solver's number of function evaluations (NFE) per training step changes as the dynamics
are learned.

Measured, for several seeds: FFJORD's 2D model (one CNF block, concat-squash MLP 64-64-64, tanh,
dopri5 at tolerance 1e-3: an adaptive solver, so the NFE is the solver's choice) is trained on
``moons`` for the same number of steps, logging the forward solve's NFE (``nfe_forward``) every
few steps. Then at ``t`` in {0, 0.5, 1} on test points the Jacobian ``A = df/dz`` of the trained
dynamics is computed exactly (autograd, ``D = 2``), and the library's ``hutchinson_trace`` is drawn
many times with each kind of noise. Exact oracles for the variance of ``e^T A e``: with Gaussian
``e``, ``2 ||A_s||_F^2``; with Rademacher ``e``, ``2 ||A_s||_F^2 - 2 sum_i A_ii^2``, where
``A_s = (A + A^T) / 2``. The table compares the empirical variances with these.

Verdict: (1) the threshold rule on ``|z|``, the mean estimation error over all points and draws
divided by its standard error, which must stay below 3; (2) the paired rule on the mean variance
(Rademacher lower). Both must hold. The NFE curves are shown, not judged.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from densitylab.data import load_dataset
from densitylab.experiments.base import (
    experiment,
    figure,
    paired_comparison,
    save_band_plot,
    seed_list,
    step_count,
    table,
    train_run,
)
from densitylab.experiments.verdict import PairedRule, ThresholdRule, combine, plus_minus
from densitylab.models.flows.cnf import draw_noise, hutchinson_trace
from densitylab.models.flows.ffjord import cnf_blocks
from densitylab.train.checkpoint import model_from_checkpoint
from densitylab.train.rundir import METRICS_FILE, MODEL_FILE

OPTIONS = {"rtol": 1e-3, "atol": 1e-3, "activation": "tanh"}
TOY = "moons"
TIMES = (0.0, 0.5, 1.0)
SETTINGS = {"tiny": {"points": 32, "draws": 20}, "small": {"points": 256, "draws": 200},
            "full": {"points": 1024, "draws": 1000}}
Z_LIMIT = 3.0
MIN_STEPS = 100


def exact_jacobian(net: Any, t: float, z: torch.Tensor) -> torch.Tensor:
    """``(N, D, D)`` Jacobians ``df_i / dz_j`` of ``net(t, z)`` at each of the points ``z``."""
    z = z.detach().requires_grad_(True)
    f = net(torch.tensor(t, dtype=z.dtype), z)
    rows = [torch.autograd.grad(f[:, i].sum(), z, retain_graph=True)[0] for i in range(z.shape[1])]
    return torch.stack(rows, 1).detach()


def hutchinson_draws(net: Any, t: float, z: torch.Tensor, kind: str, draws: int,
                     generator: torch.Generator) -> torch.Tensor:
    """``(draws, N)`` Hutchinson estimates of ``tr(df/dz)`` at the points, by the library's
    :func:`hutchinson_trace`, each draw with fresh noise of ``kind``."""
    z = z.detach().requires_grad_(True)
    f = net(torch.tensor(t, dtype=z.dtype), z)
    return torch.stack([hutchinson_trace(f, z, draw_noise(kind, z, generator), create_graph=False)
                        .detach() for _ in range(draws)])


def theoretical_variance(jacobian: torch.Tensor, kind: str) -> torch.Tensor:
    """Variance of ``e^T A e`` per point: ``2 ||A_s||_F^2`` (Gaussian), minus ``2 sum A_ii^2``
    (Rademacher)."""
    sym = 0.5 * (jacobian + jacobian.transpose(1, 2))
    gaussian = 2 * sym.pow(2).sum((1, 2))
    if kind == "gaussian":
        return gaussian
    return gaussian - 2 * torch.diagonal(jacobian, dim1=1, dim2=2).pow(2).sum(1)


def estimator_stats(net: Any, points: torch.Tensor, draws: int, seed: int) -> dict[str, Any]:
    """Bias z-score and mean variance (empirical and theoretical) for both kinds of noise, over
    the points and :data:`TIMES`."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {}
    for kind in ("rademacher", "gaussian"):
        errors, variances, theory = [], [], []
        for t in TIMES:
            exact = torch.diagonal(exact_jacobian(net, t, points), dim1=1, dim2=2).sum(1)
            estimates = hutchinson_draws(net, t, points, kind, draws, generator)
            errors.append(estimates - exact)
            variances.append(estimates.var(0))
            theory.append(theoretical_variance(exact_jacobian(net, t, points), kind))
        error = torch.cat([e.flatten() for e in errors]).double()
        per_point_var = torch.cat(variances).double()
        # the mean error's standard error: per-point variances over all draws and points
        se = math.sqrt(float(per_point_var.sum()) / draws) / per_point_var.numel()
        out[kind] = {"bias": float(error.mean()), "z": float(error.mean()) / max(se, 1e-30),
                     "variance": float(per_point_var.mean()),
                     "theory": float(torch.cat(theory).double().mean())}
    return out


@experiment("ffjord-trace", "FFJORD's Hutchinson trace estimator is unbiased, Rademacher noise "
            "has the lower variance, and the solver's function evaluations change over training")
def run_ffjord_trace(out: Path, budget: str, seed: int) -> dict[str, Any]:
    seeds, steps = seed_list(budget, seed), step_count(budget, tiny=3, small=200)
    points_n, draws = SETTINGS[budget]["points"], SETTINGS[budget]["draws"]
    test = load_dataset(TOY).test[:points_n]
    runs, stats, nfe_curves = [], [], []
    for s in seeds:
        run_dir = out / f"seed{s}"
        run = train_run(run_dir, "ffjord", TOY, steps, s, OPTIONS, batch_size=256, sample_count=0,
                        eval_every=10**9, checkpoint_every=10**9, threads=1,
                        log_every=max(1, steps // 20),
                        lr=5e-3, warmup_steps=20)
        model, _ = model_from_checkpoint(run_dir / MODEL_FILE)
        net = cnf_blocks(model)[0].net.double()
        stats.append(estimator_stats(net, test.double(), draws, s))
        nfe_curves.append(nfe_curve(run_dir))
        runs.append({**run, "z": abs(stats[-1]["rademacher"]["z"]),
                     **{f"{k}_variance": stats[-1][k]["variance"] for k in ("rademacher", "gaussian")}})
    unbiased = ThresholdRule("|z| of the Rademacher estimator's mean error", Z_LIMIT)
    z_values = [abs(st["rademacher"]["z"]) for st in stats]
    unbiased_outcome = unbiased.judge(z_values, budget, [r["steps"] for r in runs])
    variance_rule = PairedRule("the estimator's variance (mean over points and times)", "rademacher",
                               "gaussian", min_steps=MIN_STEPS)
    arms = {k: [{**r, "score": r[f"{k}_variance"]} for r in runs] for k in ("rademacher", "gaussian")}
    found = paired_comparison(variance_rule, arms, budget, score="score", digits=6, title=(
        f"Variance of the Hutchinson estimate ({draws} draws at {points_n} test points and t in "
        f"{TIMES}), one trained model per seed"))
    save_band_plot(out / "nfe.png", {"forward solve (dopri5, tolerance 1e-3)": nfe_curves}, "step",
                   "function evaluations per training step",
                   f"FFJORD on {TOY}: NFE over training, mean +- sd over {len(seeds)} seeds")
    stat_rows = [[s, kind, round(st[kind]["bias"], 5), round(st[kind]["z"], 3),
                  round(st[kind]["variance"], 5), round(st[kind]["theory"], 5)]
                 for s, st in zip(seeds, stats, strict=True) for kind in ("rademacher", "gaussian")]
    nfe_rows = [[s, curve[0][1] if curve else None, curve[-1][1] if curve else None,
                 round(sum(p[1] for p in curve) / len(curve), 1) if curve else None]
                for s, curve in zip(seeds, nfe_curves, strict=True)]
    outcome = combine([unbiased_outcome, found["outcome"]])
    return {
        "rule": ("Both parts must hold. Unbiasedness: " + unbiased.text() + " Variance: "
                 + variance_rule.text() + " The NFE curves are a measurement."),
        "outcome": outcome,
        "verdict": (f"Over {len(seeds)} seeds of {steps} steps, the Rademacher estimator's mean "
                    f"error is {plus_minus(z_values, 2)} standard errors from 0 ({unbiased_outcome}); "
                    f"variance: {found['summary']} ({found['outcome']}); NFE per step "
                    f"{nfe_text(nfe_curves)}."),
        "seeds": seeds,
        "steps": {"ffjord": steps},
        "data": f"{TOY} (continuous 2D; {points_n} test points for the estimator)",
        "tables": [
            table("Hutchinson estimates against the exact trace, per seed and noise: mean error, "
                  "its z-score, and the empirical variance beside the closed form",
                  ["seed", "noise", "mean error", "z", "variance (empirical)",
                   "variance (closed form)"], stat_rows),
            *found["tables"],
            table("Function evaluations of the forward solve per training step",
                  ["seed", "first logged", "last logged", "mean"], nfe_rows),
        ],
        "figures": [figure("nfe.png", "Function evaluations of the forward dopri5 solve per "
                           "training step, mean over seeds with a +- sd band.")],
    }


def nfe_curve(run_dir: Path) -> list[list[float]]:
    """``[[step, nfe_forward], ...]`` from a run's ``metrics.jsonl``."""
    import json

    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    records = (json.loads(line) for line in path.read_text().splitlines())
    return [[r["step"], r["nfe_forward"]] for r in records if "nfe_forward" in r]


def nfe_text(curves: list[list[list[float]]]) -> str:
    firsts = [c[0][1] for c in curves if c]
    lasts = [c[-1][1] for c in curves if c]
    if not firsts:
        return "not logged (too few steps)"
    return f"from {plus_minus(firsts, 1)} at the first log to {plus_minus(lasts, 1)} at the last"
