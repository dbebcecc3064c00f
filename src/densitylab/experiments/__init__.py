"""Experiments: each reproduces one claim of the course notes and writes results.json + figures.

Every module of this package registers its experiments with
:func:`densitylab.experiments.base.experiment` when imported; importing the package imports them
all, in the order of :data:`ORDER` (the report's order), then any others alphabetically."""

import importlib
import pkgutil

from densitylab.experiments.base import BUDGETS, EXPERIMENTS, run_experiment

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _module.name not in ("base", "verdict"):
        importlib.import_module(f"{__name__}.{_module.name}")

ORDER = ["rnn-coords", "receptive-field", "wavenet-coords", "logistic-vs-softmax", "colour-masks",
         "flow-1d", "af-vs-iaf", "dequantization", "variational-dequantization", "additive-vs-affine",
         "realnvp-masks", "glow-permutation", "flow-2d", "ffjord-trace", "leaderboard",
         "made-orderings", "conditional"]


def experiment_names() -> list[str]:
    """Registered experiments, in the report's order."""
    return [n for n in ORDER if n in EXPERIMENTS] + sorted(n for n in EXPERIMENTS if n not in ORDER)


__all__ = ["BUDGETS", "EXPERIMENTS", "experiment_names", "run_experiment"]
