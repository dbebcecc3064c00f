"""``densitylab experiment all``: every experiment, the untimed ones side by side.

A 2-core CPU trains the small networks of most experiments about as fast with one thread as with
two, so running two experiments at once, one thread each, nearly halves the wall time of the
whole set. Experiments that measure wall-clock time (``timed``: ``af-vs-iaf``, the images/s of
``leaderboard``) run first, alone, with every core, so that nothing else runs while they time.
The others go to ``jobs`` worker processes (each with ``cores // jobs`` torch threads), the ones
that took longest last time first; a failure is reported and the rest go on. The run's record,
``experiment_all.json`` in ``out``, gives the wall time of the whole set and of each experiment.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from densitylab.errors import DensitylabError
from densitylab.train.files import atomic_write_json

RECORD_FILE = "experiment_all.json"


def default_jobs() -> int:
    """Two workers on a machine with at least two cores, else one."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _run_one(name: str, out: str, budget: str, seed: int, threads: int | None) -> dict[str, Any]:
    """One experiment in a worker process (or in this one): its outcome, verdict and seconds."""
    import torch

    from densitylab.experiments import run_experiment

    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        record = run_experiment(name, Path(out), budget, seed)
    except Exception as exc:  # reported with the others; the remaining experiments go on
        return {"name": name, "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
                "seconds": round(time.perf_counter() - started, 1)}
    return {"name": name, "outcome": record["outcome"], "verdict": record["verdict"],
            "seconds": round(time.perf_counter() - started, 1)}


def previous_seconds(out: Path, name: str) -> float:
    """How long ``name`` took the last time it ran into ``out`` (0 if unknown)."""
    try:
        return float(json.loads((out / name / "results.json").read_text()).get("elapsed_s", 0.0))
    except (OSError, ValueError, AttributeError):
        return 0.0


def run_all(names: list[str], timed: set[str], out: Path, budget: str, seed: int, jobs: int,
            report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run ``names`` into ``out/NAME``: those in ``timed`` one by one first, then the rest on
    ``jobs`` processes. ``report`` is called with each result as it comes; returns the record
    (also written to ``out/experiment_all.json``)."""
    if jobs < 1:
        raise DensitylabError(f"--jobs must be at least 1, got {jobs}")
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for name in [n for n in names if n in timed]:
        results.append(_run_one(name, str(out / name), budget, seed, None))
        report(results[-1])
    rest = sorted((n for n in names if n not in timed), key=lambda n: -previous_seconds(out, n))
    if jobs == 1 or len(rest) <= 1:
        for name in rest:
            results.append(_run_one(name, str(out / name), budget, seed, None))
            report(results[-1])
    else:
        threads = max(1, cores // jobs)
        context = multiprocessing.get_context("spawn")  # no fork of a process that holds threads
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            pending: set[Future[dict[str, Any]]] = {
                pool.submit(_run_one, name, str(out / name), budget, seed, threads) for name in rest}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    results.append(future.result())
                    report(results[-1])
    record = {"budget": budget, "seed": seed, "jobs": jobs, "cores": cores,
              "wall_s": round(time.perf_counter() - started, 1),
              "timed_alone": [n for n in names if n in timed],
              "experiments": {r["name"]: {k: v for k, v in r.items() if k != "name"}
                              for r in sorted(results, key=lambda r: names.index(r["name"]))}}
    atomic_write_json(out / RECORD_FILE, record)
    return record
