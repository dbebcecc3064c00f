"""The autoregressive CDF flow ``arflow``: flow oracles of docs/design.md, section 6.

Tolerances (float64): ``inverse(forward(x))`` within 1e-8 (bisection to 1e-10 per dimension),
log-dets within 1e-6 of the autograd Jacobian, the 2D density integrates to 1 within 1e-2
(trapezoid on a grid).
"""

import json
import math

import pytest
import torch

from densitylab import build_model
from densitylab.config import RunConfig
from densitylab.errors import DensitylabError
from densitylab.train.trainer import Trainer
from tests.conftest import all_images
from tests.models.flow_checks import (
    check_gradients,
    check_invertible,
    check_logdet,
    check_save_load,
    check_shapes,
    randomize_,
)

SMALL = {"hidden": 16, "hidden_layers": 2, "n_components": 3}


def _model(dim=2, levels=0, std=0.3, seed=0, **config):
    return randomize_(build_model("arflow", (dim,), levels, SMALL | config), std, seed).double()


def _points(n, dim, seed=0, scale=1.5):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=gen, dtype=torch.float64) * scale


@pytest.mark.parametrize("dim, config", [
    (2, {}),
    (3, {"kind": "logistic", "prior": "gaussian"}),
    (4, {"prior": "logistic", "hidden_layers": 1}),
])
def test_transform_oracles(dim, config):
    transform = _model(dim, **config).transform
    x = _points(12, dim, scale=1.5 if config.get("prior", "uniform") == "uniform" else 3)
    check_shapes(transform, x)
    check_invertible(transform, x, atol=1e-8)
    check_logdet(transform, x[:3])


@pytest.mark.parametrize("dim", [2, 4])
def test_jacobian_is_lower_triangular(dim):
    """z_i depends on x_<=i only (the autoregressive property), and on x_<i for i > 0 at all."""
    transform = _model(dim).transform
    x = _points(1, dim)[0]
    jac = torch.autograd.functional.jacobian(lambda v: transform(v[None])[0][0], x)
    assert torch.equal(jac.triu(1), torch.zeros_like(jac))
    assert bool((jac.diagonal() > 0).all())
    rows, cols = torch.tril_indices(dim, dim, -1)
    assert bool((jac[rows, cols].abs() > 0).all())


@pytest.mark.parametrize("config", [{}, {"kind": "logistic", "prior": "gaussian"}])
def test_2d_density_integrates_to_one(config):
    model = _model(2, **config)
    axis = torch.linspace(-12, 12, 601, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = model.log_prob(grid).exp().view(len(axis), len(axis))
    total = torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis).item()
    assert total == pytest.approx(1.0, abs=1e-2)


def test_uniform_latent_lies_in_unit_square_and_first_dimension_is_monotone():
    model = _model(2)
    with torch.no_grad():
        z, _ = model(_points(500, 2, scale=3))
        assert bool(((z >= 0) & (z <= 1)).all())
        x0 = torch.linspace(-8, 8, 2001, dtype=torch.float64)
        grid = torch.stack([x0, torch.zeros_like(x0)], 1)
        assert bool((model(grid)[0][:, 0].diff() >= 0).all())
        x1 = torch.stack([torch.full_like(x0, 0.3), x0], 1)  # F(x_1 | x_0 = 0.3) too
        assert bool((model(x1)[0][:, 1].diff() >= 0).all())


@pytest.mark.parametrize("dim, levels", [(1, 0), (2, 0), (3, 0), (2, 16)])
def test_gradients_reach_every_parameter(dim, levels):
    model = _model(dim, levels)
    x = torch.randint(0, levels, (16, dim)) if levels else _points(16, dim)
    check_gradients(model, -model.log_prob(x).mean())


def test_dequantization_bound_sums_to_at_most_one():
    """Over all 16 x 16 discrete 2D vectors: sum exp(bound) <= 1, and it matches the mass the
    density puts on [0, 1)^2 (the tails outside are lost)."""
    model = _model(2, levels=16, std=0.1)
    values = all_images(1, 1, 2, 16).view(-1, 2)
    gen = torch.Generator().manual_seed(0)
    axis = torch.linspace(0, 1, 201, dtype=torch.float64)
    with torch.no_grad():
        bound = torch.stack([model.log_prob(values, generator=gen) for _ in range(4)]).mean(0)
        density = model.log_density(torch.cartesian_prod(axis, axis)).exp().view(201, 201)
    inside = torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis).item()
    total = torch.logsumexp(bound, 0).exp().item()
    assert total <= 1.0
    assert total == pytest.approx(inside, abs=2e-2) and inside > 0.7


def test_save_load_round_trip_keeps_the_standardization():
    x = _points(8, 2)
    model = _model(2)
    model.initialize_from_data(_points(200, 2, seed=3, scale=5) + 2)
    assert model.transform.scale.min() > 3  # the data's std, a buffer saved with the model
    check_save_load(model, lambda: build_model("arflow", (2,), 0, SMALL).double(),
                    lambda m: m.log_prob(x))


def test_initialization_puts_each_dimension_at_its_data_quantiles():
    data = torch.cat([_points(1000, 1, scale=0.5) - 3, _points(1000, 1, seed=1, scale=4)], 1)
    model = build_model("arflow", (2,), 0, SMALL).double()
    model.initialize_from_data(data)
    params = model.transform.params(data[:1])[0]  # (D, 3K)
    means_0 = params[0, 3:6]
    levels = torch.tensor([1, 3, 5], dtype=torch.float64) / 6
    assert torch.allclose(means_0, torch.quantile(data[:, 0], levels))
    with torch.no_grad():
        nats = -model.log_prob(data).mean().item() / 2
    assert nats < 2.0  # starts close to the per-dimension fit


@pytest.mark.parametrize("levels", [0, 8])
def test_samples(levels):
    model = _model(2, levels).float()
    samples = model.sample(200, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (200, 2)
    if levels:
        assert samples.dtype == torch.long and 0 <= samples.min() and samples.max() < levels
    else:
        assert bool(torch.isfinite(samples).all()) and samples.std() > 0.1


def test_unconditional_model_refuses_cond_and_images():
    model = _model(2)
    with pytest.raises(DensitylabError, match="unconditional"):
        model.log_prob(_points(2, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(DensitylabError, match="arflow"):
        build_model("arflow", (1, 4, 4), 2)


def test_training_smoke_on_moons(tmp_path):
    config = RunConfig(model="arflow", model_config={"hidden": 16}, data="moons", epochs=0.05,
                       batch_size=64, threads=1, eval_every=1000, checkpoint_every=1000,
                       log_every=5, warmup_steps=1)
    Trainer(config, tmp_path / "run", progress=False).fit()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert math.isfinite(results["test_nats_per_dim"]) and results["test_nats_per_dim"] < 2.5
    assert (tmp_path / "run" / "samples.png").is_file()
