"""NICE's additive couplings against RealNVP's affine couplings (Dinh et al. 2015; 2017).

Claim: NICE's couplings ``h_b + m(h_a)`` are volume preserving (log-determinant 0; only a final
diagonal scaling changes volume), and RealNVP's affine couplings ``h_b * exp(s(h_a)) + t(h_a)``,
which can contract and expand space where the data needs it, model densities better at the same
depth.

Trained, on 2D toys (continuous, scored in exact nats/dim), for the same number of optimizer steps
and seeds: ``nice`` (8 additive couplings, MLPs 64-64, its diagonal scaling, Gaussian prior) and
``realnvp_vector`` with the same couplings, MLPs and prior but affine couplings (and no ActNorm, so
that the coupling is the difference). Verdict: the paired rule on test nats/dim (affine lower), on
every toy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from densitylab.experiments.base import (
    experiment,
    figure,
    paired_comparison,
    save_seed_plot,
    seed_list,
    step_count,
    table,
    train_run,
)
from densitylab.experiments.verdict import PairedRule, combine

ARMS = {  # arm -> (model, options)
    "affine": ("realnvp_vector", {"couplings": 8, "hidden_features": 64, "hidden_layers": 2,
                                  "actnorm": False, "prior": "gaussian"}),
    "additive": ("nice", {"couplings": 8, "hidden_features": 64, "hidden_layers": 2,
                          "prior": "gaussian"}),
}
TOYS = {"tiny": ("moons",), "small": ("moons", "checkerboard"), "full": ("moons", "checkerboard",
                                                                         "rings", "spirals")}
BATCH_SIZE = 256
MIN_STEPS = 500


@experiment("additive-vs-affine", "Affine couplings (RealNVP) model densities better than NICE's "
            "volume-preserving additive couplings at the same depth")
def run_additive_vs_affine(out: Path, budget: str, seed: int) -> dict[str, Any]:
    seeds, steps = seed_list(budget, seed), step_count(budget, tiny=5, small=1000)
    rule = PairedRule("test nats/dim", "affine", "additive", min_steps=MIN_STEPS)
    tables, outcomes, sentences, values = [], {}, [], {}
    for toy in TOYS[budget]:
        arms: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
        for s in seeds:
            for arm, (model, options) in ARMS.items():
                arms[arm].append(train_run(out / toy / f"seed{s}" / arm, model, toy, steps, s,
                                           options, batch_size=BATCH_SIZE, sample_count=0,
                                           test_images=None, eval_every=10**9,
                                           checkpoint_every=10**9, threads=1, lr=3e-3,
                                           warmup_steps=20))
        found = paired_comparison(rule, arms, budget, score="test_nats_per_dim", title=(
            f"{toy}: test nats/dim after {steps} steps (batch {BATCH_SIZE}, lr 3e-3), one run per "
            "seed and coupling"))
        outcomes[toy] = found["outcome"]
        sentences.append(f"{toy}: {found['summary']}: {found['outcome']}")
        tables += found["tables"]
        values |= {f"{arm}\n{toy}": v for arm, v in found["values"].items()}
    save_seed_plot(out / "nats_per_dim.png", values, "test nats/dim",
                   f"additive vs affine couplings, {steps} steps")
    return {
        "rule": "Every toy must pass. " + rule.text(),
        "outcome": combine(list(outcomes.values())),
        "verdict": "; ".join(sentences) + ".",
        "seeds": seeds,
        "steps": {arm: steps for arm in ARMS},
        "data": f"2D toys {', '.join(TOYS[budget])} (continuous; exact test nats/dim on 5,000 points)",
        "tables": tables + [table("The two flows", ["arm", "model", "options"],
                                  [[arm, model, str(options)] for arm, (model, options) in ARMS.items()]
                                  + [["(both)", "steps per run", steps]])],
        "figures": [figure("nats_per_dim.png", "Every seed's test nats/dim per toy and coupling, "
                           "with mean +- sd.")],
    }
