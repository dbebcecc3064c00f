"""What an experiment is: one claim of the course notes, a run that measures it, and the record
(``results.json``) that the report renders.

An experiment is a function ``run(out, budget, seed) -> dict`` registered with :func:`experiment`
under a name and a claim. It writes its figures into ``out`` and returns:

- ``verdict``: one sentence saying what was measured and whether it supports the claim;
- ``reproduced``: ``True``/``False``, or ``None`` where the claim is a picture to look at;
- ``data``: the data it used, in words;
- ``tables``: ``[{"title", "columns", "rows"}]`` — the numbers, straight from the runs;
- ``figures``: ``[{"file", "caption"}]`` — files inside ``out``.

:func:`run_experiment` adds the name, claim, budget, seed, the command that reproduces it and the
elapsed time, checks the record, and writes ``results.json`` atomically. Budgets: ``tiny`` (the
tests: seconds), ``small`` (a 2-core CPU: all experiments in under an hour), ``full`` (a GPU).
"""

from __future__ import annotations

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
from densitylab.train.files import atomic_write_json
from densitylab.train.rundir import METRICS_FILE, RESULTS_FILE

BUDGETS = ("tiny", "small", "full")

RunFn = Callable[[Path, str, int], dict[str, Any]]


@dataclass(frozen=True)
class Experiment:
    name: str
    claim: str
    run: RunFn


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str, claim: str) -> Callable[[RunFn], RunFn]:
    """Register ``run(out, budget, seed) -> record`` as experiment ``name``."""

    def register(run: RunFn) -> RunFn:
        EXPERIMENTS[name] = Experiment(name, claim, run)
        return run

    return register


def table(title: str, columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"title": title, "columns": columns, "rows": rows}


def figure(file: str, caption: str) -> dict[str, str]:
    return {"file": file, "caption": caption}


def check_record(record: dict[str, Any], out: Path) -> None:
    """Raise ``ValueError`` if ``record`` lacks a field the report needs or names a missing figure."""
    for key, kind in (("verdict", str), ("data", str), ("tables", list), ("figures", list)):
        if not isinstance(record.get(key), kind):
            raise ValueError(f"experiment record needs {key!r} ({kind.__name__})")
    if record.get("reproduced") not in (True, False, None):
        raise ValueError("'reproduced' must be true, false or null")
    for t in record["tables"]:
        if not t["rows"] or any(len(row) != len(t["columns"]) for row in t["rows"]):
            raise ValueError(f"table {t['title']!r}: every row needs one value per column")
    for f in record["figures"]:
        if not (out / f["file"]).is_file():
            raise ValueError(f"figure {f['file']!r} was not written to {out}")


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
    record = {
        "experiment": name,
        "claim": spec.claim,
        "budget": budget,
        "seed": seed,
        "command": f"densitylab experiment {name} --budget {budget} --seed {seed} --out {out}",
        **found,
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
    """Training seconds per run at ``budget`` (``full``: ten times ``small`` unless given)."""
    return {"tiny": tiny, "small": small, "full": full if full is not None else 10 * small}[budget]


def train_run(out: Path, model: str, data: str, seconds: float, seed: int = 0,
              model_config: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """Train ``model`` on ``data`` for ``seconds`` into ``out`` (a run directory, replaced if it
    exists) through the one Trainer; returns its ``results.json`` plus ``curve``: the logged
    ``(train seconds, train loss)`` and ``(step, test loss)`` points."""
    from densitylab.train.trainer import Trainer

    config = RunConfig(model=model, model_config=model_config or {}, data=data,
                       time_budget=f"{seconds}s", seed=seed, **options)
    trainer = Trainer(config.validate(), out, force=True, progress=False)
    results = trainer.fit()
    return {**results, "curve": read_curve(out / METRICS_FILE)}


def read_curve(path: Path) -> dict[str, list[list[float]]]:
    """``{"train": [[seconds, loss], ...], "test": [[step, loss], ...]}`` from ``metrics.jsonl``."""
    train, test = [], []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key.startswith("train_") and key != "train_seconds" and isinstance(value, float):
                if math.isfinite(value):
                    train.append([record.get("train_seconds", 0.0), value, record["step"]])
            elif key.startswith("test_") and isinstance(value, float):
                test.append([record["step"], value])
    return {"train": train, "test": test}
