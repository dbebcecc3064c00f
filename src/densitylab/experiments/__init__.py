"""Experiments: each reproduces one claim of the course notes and writes results.json + figures."""

from densitylab.experiments.receptive_field import run_receptive_field

EXPERIMENTS = {"receptive-field": run_receptive_field}

__all__ = ["EXPERIMENTS"]
