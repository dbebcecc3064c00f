"""Glow's invertible 1x1 convolution against a fixed channel permutation and a reversal (Kingma &
Dhariwal 2018, section 3.2 and figure 3).

Claim: between the couplings of a flow the channels must be mixed, or the same half is never
transformed. RealNVP reverses them; a fixed random shuffle mixes them differently at every step;
Glow learns the mixing as a 1x1 convolution ``z = W x`` (``log|det| = H W log|det W|``), and that
learned mixing gives lower bits/dim at the same number of steps.

Trained: the same ``glow`` (default size; small networks at the tiny budget), for the same number
of optimizer steps and seeds, three times: as built (LU-decomposed 1x1 convolutions), and with
every 1x1 convolution replaced by a :class:`ChannelPermutation` -- a fixed random shuffle (drawn
once per layer from the seed) or the reversal of the channels -- before training; a permutation
has no parameters and log-determinant 0. Measured: test bits/dim (the dequantization bound) on the
first test images, parameters and images/s. Verdict: the paired rule, the 1x1 convolution against
each fixed permutation; both must hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from densitylab.config import RunConfig
from densitylab.experiments.base import (
    ARM_COLUMNS,
    arm_rows,
    epochs_for,
    experiment,
    figure,
    image_data,
    paired_comparison,
    save_seed_plot,
    seed_list,
    step_count,
    table,
    threads,
)
from densitylab.experiments.verdict import PairedRule, combine
from densitylab.models.flows.invconv import InvConv1x1
from densitylab.models.flows.transforms import Transform

ARMS = ("1x1 convolution", "shuffle", "reverse")
TINY_OPTIONS = {"n_scales": 2, "steps_per_scale": 2, "hidden_channels": 16}
BATCH_SIZE = 64
TEST_IMAGES = {"tiny": 64, "small": 1000, "full": 10000}
MIN_STEPS = 200


class ChannelPermutation(Transform):
    """A fixed permutation of the channels of ``(B, C, H, W)`` tensors (log-determinant 0)."""

    def __init__(self, permutation: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("permutation", permutation.clone())
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def forward(self, x, cond=None):
        return x[:, self.permutation], x.new_zeros(x.shape[0])

    def inverse(self, z, cond=None):
        return z[:, self.inverse_permutation], z.new_zeros(z.shape[0])


def replace_invconvs(model: torch.nn.Module, kind: str, seed: int) -> int:
    """Replace every :class:`InvConv1x1` inside ``model`` by a ``shuffle`` or ``reverse``
    :class:`ChannelPermutation`; returns how many were replaced."""
    generator = torch.Generator().manual_seed(seed)
    targets = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if isinstance(child, InvConv1x1)]
    for parent, name, child in targets:
        channels = child.log_s.numel()
        order = (torch.randperm(channels, generator=generator) if kind == "shuffle"
                 else torch.arange(channels - 1, -1, -1))
        setattr(parent, name, ChannelPermutation(order).to(child.log_s.device))
    return len(targets)


def train_arm(out: Path, data: str, steps: int, seed: int, options: dict[str, Any], arm: str,
              test_images: int) -> dict[str, Any]:
    """One Glow run of exactly ``steps`` steps with the channel mixing of ``arm``."""
    from densitylab.train.trainer import Trainer

    config = RunConfig(model="glow", model_config=options, data=data, seed=seed,
                       epochs=epochs_for(steps, data, BATCH_SIZE), batch_size=BATCH_SIZE,
                       eval_every=10**9, checkpoint_every=10**9, sample_count=0)
    with threads():
        trainer = Trainer(config.validate(), out, force=True, progress=False)
        replaced = replace_invconvs(trainer.model, arm, seed) if arm != ARMS[0] else 0
        trainer.train_loop()
        score = trainer.evaluate(test_images)
    state = trainer.state
    return {"test_bits_per_dim": score, "steps": state.step, "train_seconds": state.train_seconds,
            "images_per_s": state.step * BATCH_SIZE / max(state.train_seconds, 1e-9),
            "parameters": sum(p.numel() for p in trainer.model.parameters()), "replaced": replaced}


@experiment("glow-permutation", "Glow's learned invertible 1x1 convolution beats a fixed channel "
            "shuffle and a reversal")
def run_glow_permutation(out: Path, budget: str, seed: int) -> dict[str, Any]:
    data, seeds = image_data(budget), seed_list(budget, seed)
    steps = step_count(budget, tiny=4, small=300)
    options = TINY_OPTIONS if budget == "tiny" else {}
    arms: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for s in seeds:
        for arm in ARMS:
            arms[arm].append(train_arm(out / f"seed{s}" / arm.replace(" ", "_"), data, steps, s,
                                       options, arm, TEST_IMAGES[budget]))
    rules = [PairedRule("test bits/dim", ARMS[0], other, min_steps=MIN_STEPS) for other in ARMS[1:]]
    found = [paired_comparison(rule, {k: arms[k] for k in (rule.better, rule.other)}, budget)
             for rule in rules]
    save_seed_plot(out / "bits_per_dim.png", {arm: [r["test_bits_per_dim"] for r in runs]
                                              for arm, runs in arms.items()},
                   "test bits/dim", f"Glow on {data}, {steps} steps")
    replaced = arms["shuffle"][0]["replaced"]
    return {
        "rule": "Both comparisons must hold (against the shuffle and the reversal); each: "
                + rules[0].text(),
        "outcome": combine([f["outcome"] for f in found]),
        "verdict": "; ".join(f"{f['summary']}: {f['outcome']}" for f in found)
                   + f" ({replaced} 1x1 convolutions replaced in each permuted Glow).",
        "seeds": seeds,
        "steps": {arm: steps for arm in ARMS},
        "data": f"{data}; test bits/dim (dequantization bound) on the first "
                f"{TEST_IMAGES[budget]} test images",
        "tables": [table(f"Glow on {data} after {steps} steps (batch {BATCH_SIZE}), one run per "
                         "seed and channel mixing", ARM_COLUMNS, arm_rows(arms)),
                   *(f["tables"][1] for f in found)],
        "figures": [figure("bits_per_dim.png", "Every seed's test bits/dim for the three channel "
                           "mixings, with mean +- sd.")],
    }
