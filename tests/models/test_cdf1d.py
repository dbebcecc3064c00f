"""The mixture-CDF transform and the ``cdf1d`` model: flow oracles of docs/design.md, section 6.

Tolerances (float64): ``inverse(forward(x))`` within 1e-8 (bisection to 1e-10), log-dets within
1e-6 of the autograd Jacobian, densities integrate to 1 within 1e-3 (trapezoid on a fine grid).
"""

import json
import math

import pytest
import torch

from densitylab import build_model
from densitylab.cli import main
from densitylab.config import RunConfig
from densitylab.data import load_dataset
from densitylab.errors import DensitylabError
from densitylab.models.flows.mixture_cdf import MixtureCDF, mixture_solve, split_params
from densitylab.train.trainer import Trainer
from tests.models.flow_checks import (
    check_gradients,
    check_invertible,
    check_logdet,
    check_save_load,
    check_shapes,
    randomize_,
)

COMBOS = [(kind, prior) for kind in ("gaussian", "logistic")
          for prior in ("uniform", "gaussian", "logistic")]


def _model(shape=(1,), levels=0, seed=0, std=0.3, **config):
    return randomize_(build_model("cdf1d", shape, levels, config), std, seed).double()


def _points(n, dim, prior, seed=0):
    """Test points: in the bulk for the uniform latent (z = F(x) rounds to 1 beyond ~8 sigma)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=gen, dtype=torch.float64) * (1.0 if prior == "uniform" else 4)


@pytest.mark.parametrize("kind, prior", COMBOS)
def test_transform_oracles(kind, prior):
    transform = _model((3,), kind=kind, prior=prior).transform
    x = _points(40, 3, prior)
    check_shapes(transform, x)
    check_invertible(transform, x, atol=1e-8)
    check_logdet(transform, x[:4])


@pytest.mark.parametrize("kind, prior", COMBOS)
def test_conditional_transform_oracles(kind, prior):
    """Per-example parameters (B, D, 3K), as an autoregressive conditioner gives them."""
    transform = MixtureCDF(None, 4, kind, prior, conditional=True)
    gen = torch.Generator().manual_seed(1)
    params = torch.randn(6, 2, 12, generator=gen, dtype=torch.float64)
    x = _points(6, 2, prior, seed=2)
    check_shapes(transform, x, params)
    check_invertible(transform, x, params, atol=1e-8)
    check_logdet(transform, x, params)
    with pytest.raises(ValueError, match="3K|12"):
        transform(x, params[..., :9])


@pytest.mark.parametrize("kind, prior", COMBOS)
def test_density_integrates_to_one(kind, prior):
    model = _model(kind=kind, prior=prior)
    grid = torch.linspace(-20, 20, 40001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        density = model.log_prob(grid).exp()
    assert torch.trapezoid(density, grid[:, 0]).item() == pytest.approx(1.0, abs=1e-3)


def test_uniform_latent_of_data_lies_in_unit_interval_and_cdf_is_monotone():
    data = load_dataset("mixture-1d", None, None).test[:2000].double()
    model = _model()
    model.initialize_from_data(data)
    with torch.no_grad():
        z, _ = model(data)
        assert bool(((z >= 0) & (z <= 1)).all())
        grid = torch.linspace(-10, 10, 5001, dtype=torch.float64)[:, None]
        cdf = model(grid)[0][:, 0]
    steps = cdf.diff()
    assert bool((steps >= 0).all()) and bool((steps[1500:3500] > 0).all())
    assert cdf[0] < 1e-6 and cdf[-1] > 1 - 1e-6


def test_independent_dimensions_multiply():
    """For D > 1 the density is the product of the per-dimension 1D densities."""
    model = _model((2,), kind="logistic")
    parts = []
    for d in range(2):
        single = build_model("cdf1d", (1,), 0, {"kind": "logistic"}).double()
        with torch.no_grad():
            for name in ("logits", "means", "log_scales"):
                getattr(single.transform, name).copy_(getattr(model.transform, name)[d : d + 1])
        parts.append(single)
    x = _points(10, 2, "gaussian")
    expected = parts[0].log_prob(x[:, :1]) + parts[1].log_prob(x[:, 1:])
    assert torch.allclose(model.log_prob(x), expected, atol=1e-12)


def test_dequantization_bound_of_gaps_1d_sums_to_at_most_one():
    """Over all 100 levels: sum exp(bound) <= 1, and it matches the mass the density puts on [0, 1)
    (the mixture's tails outside [0, 1) are lost)."""
    model = _model(levels=100, std=0.1)
    values = torch.arange(100)[:, None]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bound = torch.stack([model.log_prob(values, generator=gen) for _ in range(8)]).mean(0)
        grid = torch.linspace(0, 1, 20001, dtype=torch.float64)[:, None]
        inside = torch.trapezoid(model.log_density(grid).exp(), grid[:, 0]).item()
    total = torch.logsumexp(bound, 0).exp().item()
    assert total <= 1.0
    assert total == pytest.approx(inside, abs=1e-2) and inside > 0.7


def test_fresh_discrete_model_spreads_its_mixture_over_the_unit_interval():
    model = build_model("cdf1d", (1,), 100, {"n_components": 4})
    means = model.transform.means.detach()[0]
    assert torch.allclose(means, torch.tensor([0.125, 0.375, 0.625, 0.875]))
    data = load_dataset("gaps-1d", None, None).train[:4096]
    model.initialize_from_data(data)
    means = model.transform.means.detach()[0]
    assert bool((means.diff() > 0).all()) and 0 < means.min() and means.max() < 1


@pytest.mark.parametrize("levels", [0, 100])
def test_gradients_reach_every_parameter(levels):
    model = _model((2,), levels=levels, prior="gaussian")
    x = torch.randint(0, 100, (16, 2)) if levels else _points(16, 2, "gaussian")
    check_gradients(model, -model.log_prob(x).mean())


def test_inverse_is_differentiable_by_the_implicit_function_theorem():
    transform = _model(kind="logistic", prior="gaussian").transform
    z = torch.linspace(-2, 2, 7, dtype=torch.float64)[:, None].requires_grad_()
    x, logabsdet = transform.inverse(z)
    (dx_dz,) = torch.autograd.grad(x.sum(), z)
    assert torch.allclose(dx_dz[:, 0], logabsdet.exp(), rtol=1e-8)

    params = torch.randn(5, 1, 9, dtype=torch.float64, requires_grad=True)
    target = torch.rand(5, 1, dtype=torch.float64)

    def solve(p):
        return mixture_solve(target, *split_params(p, 3), "gaussian", "uniform", tolerance=1e-14)

    assert torch.autograd.gradcheck(solve, (params,), atol=1e-5, fast_mode=True)


def test_save_load_round_trip():
    x = _points(8, 2, "gaussian")
    model = _model((2,), kind="logistic", prior="logistic")
    check_save_load(model, lambda: build_model("cdf1d", (2,), 0, {"kind": "logistic",
                                                                  "prior": "logistic"}).double(),
                    lambda m: m.log_prob(x))


def test_float32_inverse_within_stated_tolerance():
    model = randomize_(build_model("cdf1d", (1,), 0, {"prior": "gaussian"}), 0.3)
    x = torch.randn(500, 1)
    with torch.no_grad():
        x_back, _ = model.transform.inverse(model.transform(x)[0])
    assert (x_back - x).abs().max() < 1e-5


@pytest.mark.parametrize("levels, prior", [(0, "uniform"), (0, "gaussian"), (100, "uniform")])
def test_samples(levels, prior):
    model = _model(levels=levels, prior=prior).float()
    samples = model.sample(300, generator=torch.Generator().manual_seed(0), temperature=0.8)
    assert samples.shape == (300, 1)
    if levels:
        assert samples.dtype == torch.long and 0 <= samples.min() and samples.max() < levels
    else:
        assert samples.dtype == torch.float32 and bool(torch.isfinite(samples).all())
        assert samples.std() > 0.1


def test_bad_options_are_clear_errors():
    with pytest.raises(DensitylabError, match="kind"):
        build_model("cdf1d", (1,), 0, {"kind": "laplace"})
    with pytest.raises(DensitylabError, match="prior"):
        build_model("cdf1d", (1,), 0, {"prior": "cauchy"})
    with pytest.raises(DensitylabError, match="cdf1d"):
        build_model("cdf1d", (1, 4, 4), 2)


def test_training_smoke_on_mixture_1d(tmp_path):
    config = RunConfig(model="cdf1d", data="mixture-1d", epochs=0.05, batch_size=64, threads=1,
                       eval_every=1000, checkpoint_every=1000, log_every=5, warmup_steps=1)
    results = Trainer(config, tmp_path / "run", progress=False).fit()
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test_nats_per_dim"] == pytest.approx(results["test_nats_per_dim"])
    assert math.isfinite(saved["test_nats_per_dim"]) and saved["test_nats_per_dim"] < 2.5


def test_cli_trains_on_gaps_1d(tmp_path, capsys):
    assert main(["train", "cdf1d", "--data", "gaps-1d", "--epochs", "0.05", "--out",
                 str(tmp_path / "run"), "--no-progress", "--threads", "1",
                 "--model-opt", "kind=logistic"]) == 0
    assert "test bits/dim" in capsys.readouterr().out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["levels"] == 100 and 0 < results["test_bits_per_dim"] < 8
