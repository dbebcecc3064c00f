"""Vector data from files and continuous contexts: a float table is a continuous dataset scored in
nats/dim (standardised by the flow, that standardisation's log-determinant included), context
columns condition MAF / spline MAF / RealNVP / Glow on vectors, bad cells are one-line errors, and
the Python API (``densitylab.load``, ``densitylab.fit``) works on runs made by the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import densitylab as dl
from densitylab.data import load_dataset
from densitylab.errors import DensitylabError
from tests.models.flow_checks import check_logdet, randomize_


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "densitylab", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def _wine_csv(path) -> None:
    from sklearn.datasets import load_wine

    table = load_wine()
    header = ",".join(name.replace(",", " ") for name in table.feature_names)
    np.savetxt(path, table.data, delimiter=",", header=header, comments="")


def test_a_real_table_trains_from_the_command_line_and_loads_in_python(tmp_path):
    """scikit-learn's wine table (178 x 13) as a CSV with a header: train, eval, sample, load."""
    csv = tmp_path / "wine.csv"
    _wine_csv(csv)
    run = tmp_path / "run"
    done = _cli("train", "maf", "--data", str(csv), "--epochs", "3", "--batch-size", "32",
                "--model-opt", "hidden_sizes=[32]", "--model-opt", "n_transforms=2", "--out", str(run),
                "--no-progress")
    assert done.returncode == 0, done.stderr
    results = json.loads((run / "results.json").read_text())
    assert results["unit"] == "nats/dim" and math.isfinite(results["test_nats_per_dim"])
    model = dl.load(run)
    assert not model.training and model.levels == 0 and model.dataset == str(csv)
    data = load_dataset(str(csv))
    # standardised by the train split's statistics, saved with the model
    assert torch.allclose(model.standardize.shift.float(), data.train.mean(0), rtol=1e-4, atol=1e-3)
    with torch.no_grad():
        log_p = model.log_prob(data.test)
        samples = model.sample((5,), generator=torch.Generator().manual_seed(0))
    assert log_p.shape == (len(data.test),) and bool(torch.isfinite(log_p).all())
    assert samples.shape == (5, 13)
    # samples come back in the data's own units (proline is in the hundreds, hue near 1)
    assert samples[:, 12].abs().mean() > 50 and samples[:, 10].abs().mean() < 10
    evaluated = _cli("eval", str(run))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["nats_per_dim"] == pytest.approx(
        results["test_nats_per_dim"], rel=1e-5)


def test_standardization_counts_its_log_determinant():
    model = dl.build_model("maf", (3,), 0, {"n_transforms": 1, "hidden_sizes": [8]}).double()
    points = torch.randn(200, 3, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1]) + 5
    model.standardize.fit(points)
    randomize_(model, 0.1)
    check_logdet(model, points[:4], atol=1e-8)
    # a density of the raw data: a Gaussian fit scored in the raw units
    with torch.no_grad():
        fresh = dl.build_model("maf", (3,), 0, {"n_transforms": 1, "hidden_sizes": [8]}).double()
        fresh.standardize.fit(points)
        expected = torch.distributions.Normal(points.mean(0), points.std(0, correction=0))
        assert torch.allclose(fresh.log_prob(points), expected.log_prob(points).sum(1), atol=1e-9)


@pytest.mark.parametrize("content, message", [
    ("a,b\n1,2\n3,nan\n", "row 3, column 2"),
    ("1,2\n3,inf\n", "row 2, column 2"),
    ("1,2\n3,hello\n", "row 2, column 2 holds 'hello'"),
    ("1,2\n3\n", "row 2 has 1 columns"),
])
def test_bad_cells_are_one_line_errors_naming_row_and_column(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(DensitylabError, match=message):
        load_dataset(str(path))
    done = _cli("train", "maf", "--data", str(path), "--epochs", "1", "--out", str(tmp_path / "r"))
    assert done.returncode == 2 and message.split(" holds")[0] in done.stderr
    assert "Traceback" not in done.stderr


def test_npy_and_npz_tables_and_context_columns(tmp_path):
    values = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    np.save(tmp_path / "t.npy", values)
    data = load_dataset(str(tmp_path / "t.npy"))
    assert data.continuous and data.shape == (4,) and len(data.train) + len(data.test) == 50
    with_context = load_dataset(str(tmp_path / "t.npy"), context_columns="0,3")
    assert with_context.shape == (2,) and with_context.context_features == 2
    np.savez(tmp_path / "t.npz", x=values[:, :3], context=values[:, 3:])
    npz = load_dataset(str(tmp_path / "t.npz"))
    assert npz.shape == (3,) and npz.context_features == 1
    with pytest.raises(DensitylabError, match="no column 'nope'"):
        load_dataset(str(tmp_path / "t.npy"), context_columns="nope")


def _conditional_toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x | c ~ N((2c, -c), 0.3^2 I), c ~ U[-1, 1]: a 2D density whose mean moves with a context."""
    gen = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 1, generator=gen) * 2 - 1
    x = torch.cat([2 * c, -c], 1) + 0.3 * torch.randn(n, 2, generator=gen)
    return x, c


@pytest.mark.parametrize("name, options", [
    ("maf", {"n_transforms": 2, "hidden_sizes": [32]}),
    ("maf", {"n_transforms": 2, "hidden_sizes": [32], "transform": "spline", "bins": 4}),
    ("realnvp_vector", {"couplings": 4, "hidden_features": 32, "hidden_layers": 1}),
    ("glow_vector", {"steps": 3, "hidden_features": 32}),
])
def test_conditional_samples_match_the_true_conditional(name, options):
    """Trained briefly with ``densitylab.fit``, each conditional flow's samples at a fixed context
    have the true conditional mean (2c, -c) and spread 0.3, and its density is conditional."""
    torch.manual_seed(0)
    x, c = _conditional_toy(4000, 0)
    model = dl.build_model(name, (2,), 0, options | {"context_features": 1})
    dl.fit(model, x, cond=c, steps=600, batch_size=128, lr=3e-3, eval_every=10_000)
    assert not model.training
    for value in (-0.8, 0.0, 0.8):
        context = torch.full((1, 1), value)
        with torch.no_grad():
            samples = model.sample(2000, context, generator=torch.Generator().manual_seed(1))
        mean, std = samples.mean(0), samples.std(0)
        assert torch.allclose(mean, torch.tensor([2 * value, -value]), atol=0.12), (value, mean)
        assert torch.allclose(std, torch.full((2,), 0.3), atol=0.1), (value, std)
    with pytest.raises(DensitylabError, match="context"):
        model.log_prob(x[:3])  # a conditional flow needs its context


def test_fit_trains_a_flow_composed_from_public_transforms():
    """The README's example: a custom flow of public transforms, trained by densitylab.fit."""
    from densitylab.transforms import ActNorm, AffineVectorCoupling, AsChannels, CompositeTransform

    torch.manual_seed(0)
    points, _ = _conditional_toy(3000, 1)
    layers = []
    for k in range(4):
        layers += [AffineVectorCoupling(2, parity=k % 2, hidden=32), AsChannels(ActNorm(2))]
    flow = dl.Flow((2,), 0, CompositeTransform(layers), prior="gaussian")
    before = -flow.log_prob(points).mean().item()
    results = dl.fit(flow, points, steps=300, batch_size=128, lr=3e-3)
    after = -flow.log_prob(points).mean().item()
    assert results["steps"] == 300 and after < before - 0.3
    assert flow.sample((4,)).shape == (4, 2)
