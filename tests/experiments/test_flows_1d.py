"""The measurements behind ``flow-1d`` and ``dequantization`` on cases with known answers."""

import math

import pytest
import torch

from densitylab import build_model
from densitylab.experiments.flows_1d import (
    PMF,
    dequantized_bound,
    empirical_entropy,
    exact_probabilities,
    histogram_bits_per_dim,
    ks_distance,
    latents,
    mass_near_points,
    model_curves,
    threads,
    tiny_discrete_data,
    train_log_likelihood,
)


@pytest.mark.parametrize("prior", ["uniform", "gaussian", "logistic"])
def test_ks_distance_matches_scipy(prior):
    scipy_stats = pytest.importorskip("scipy.stats")
    z = torch.randn(400, generator=torch.Generator().manual_seed(1)) * 0.7 + 0.2
    if prior == "uniform":
        z = torch.sigmoid(z)
    cdf = {"uniform": "uniform", "gaussian": "norm", "logistic": "logistic"}[prior]
    expected = scipy_stats.kstest(z.double().numpy(), cdf).statistic
    assert ks_distance(z, prior) == pytest.approx(expected, abs=1e-12)
    # the prior's own quantiles are as close as n points can be: half a step
    levels = (torch.arange(400, dtype=torch.float64) + 0.5) / 400
    quantiles = {"uniform": levels, "gaussian": torch.special.ndtri(levels),
                 "logistic": torch.logit(levels)}[prior]
    assert ks_distance(quantiles, prior) == pytest.approx(0.5 / 400, abs=1e-12)


def _single_gaussian_cdf_flow(prior: str, mean: float = 0.0):
    model = build_model("cdf1d", (1,), 0, {"n_components": 1, "prior": prior})
    model.transform.set_mixture(torch.tensor([[mean]]), torch.tensor([[0.0]]))
    return model.eval()


def test_latents_of_matching_data_look_like_the_prior_and_of_shifted_data_do_not():
    x = torch.randn(5000, 1, generator=torch.Generator().manual_seed(0))
    for prior in ("uniform", "gaussian"):
        right = latents(_single_gaussian_cdf_flow(prior), x, torch.Generator())
        wrong = latents(_single_gaussian_cdf_flow(prior, mean=1.0), x, torch.Generator())
        assert right.shape == (5000,)
        assert ks_distance(right, prior) < 0.03
        assert ks_distance(wrong, prior) > 0.3  # Phi(0.5) - Phi(-0.5) = 0.38


def test_latents_of_discrete_data_are_dequantized_and_in_the_unit_interval():
    model = build_model("cdf1d", (1,), 10, {"n_components": 3}).eval()
    x = torch.full((2000, 1), 4)
    z = latents(model, x, torch.Generator().manual_seed(0))
    assert ((z >= 0) & (z <= 1)).all()
    assert z.unique().numel() == 2000  # each point got its own u, not one value per integer


def test_model_curves_integrate_to_one_and_the_map_increases():
    continuous = _single_gaussian_cdf_flow("gaussian")
    curves = model_curves(continuous, torch.randn(3000, 1, generator=torch.Generator().manual_seed(0)))
    mass = torch.trapezoid(curves["density"], curves["x"])
    assert 0.99 < float(mass) <= 1.0
    assert (curves["z"].diff() > 0).all()
    discrete = build_model("cdf1d", (1,), 20, {"n_components": 4}).eval()
    curves = model_curves(discrete, torch.randint(0, 20, (100, 1)), points=4000)
    assert curves["x"].min() > 0 and curves["x"].max() < 20
    mass = float(curves["density"].sum() * 20 / 4000)  # per unit of x + u on [0, 20)
    with torch.no_grad():
        inside = float(discrete(torch.ones(1, 1))[0] - discrete(torch.zeros(1, 1))[0])
    assert mass == pytest.approx(inside, abs=1e-3)  # the mass the mixture keeps inside [0, 1)


def test_histogram_reference_of_uniform_counts_is_log2_levels():
    train = torch.arange(8).repeat(10)[:, None]
    assert histogram_bits_per_dim(train, torch.tensor([[0], [5]]), 8) == pytest.approx(3.0)


def test_tiny_discrete_data_follows_the_table_and_entropy_is_exact():
    x = tiny_discrete_data(4000, seed=3)
    assert x.shape == (4000, 2) and x.min() >= 0 and x.max() <= 3
    counts = torch.zeros(4, 4)
    counts.index_put_((x[:, 0], x[:, 1]), torch.ones(len(x)), accumulate=True)
    assert (counts[PMF == 0] == 0).all()
    assert torch.allclose(counts / len(x), (PMF / PMF.sum()).float(), atol=0.02)
    four = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]]).repeat(5, 1)
    assert empirical_entropy(four) == pytest.approx(math.log(4))


def test_uniform_flow_enumerates_to_exact_uniform_probabilities():
    """MAF with a logistic prior and alpha = 0 starts exactly uniform on [0, 1)^D: every P(x) is
    K^-D and the dequantized bound is tight."""
    model = build_model("maf", (2,), 4, {"n_transforms": 1, "hidden_sizes": [8], "prior": "logistic",
                                         "alpha": 0.0}).double().eval()
    exact = exact_probabilities(model, 16)
    assert exact["points"].shape == (16, 2)
    assert torch.allclose(exact["log_p"], torch.full((16,), -2 * math.log(4), dtype=torch.float64),
                          atol=1e-9)
    assert torch.allclose(exact["quadrature_bound"], exact["log_p"], atol=1e-9)
    mean, se = dequantized_bound(model, exact["points"], 64, seed=0)
    assert torch.allclose(mean, exact["log_p"], atol=1e-6) and float(se.max()) < 1e-6


def test_random_flow_probabilities_sum_to_one_and_bound_the_dequantized_likelihood():
    model = build_model("maf", (2,), 3, {"n_transforms": 2, "hidden_sizes": [8], "alpha": 0.0}).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    exact = exact_probabilities(model, 64)
    assert float(torch.exp(exact["log_p"]).sum()) == pytest.approx(1.0, abs=1e-4)
    finer = exact_probabilities(model, 96)
    assert torch.allclose(finer["log_p"], exact["log_p"], atol=1e-4)
    assert (exact["quadrature_bound"] <= exact["log_p"] + 1e-12).all()  # Jensen, cell by cell
    gaps = exact["log_p"] - exact["quadrature_bound"]
    assert float(gaps.max()) > 1e-3  # a non-uniform density: the bound is strictly below
    mean, se = dequantized_bound(model, exact["points"], 2000, seed=1)
    assert (mean <= exact["log_p"] + 4 * se).all()
    assert torch.allclose(mean, exact["quadrature_bound"], atol=float(6 * se.max()) + 1e-3)


def test_mass_near_points_of_a_standard_normal_is_the_box_probability():
    model = build_model("maf", (2,), 0, {"n_transforms": 1, "hidden_sizes": [8]}).double().eval()
    delta = 0.1
    axis = torch.arange(3, dtype=torch.float64)
    per_axis = torch.special.ndtr(axis + delta) - torch.special.ndtr(axis - delta)
    expected = float(per_axis.sum() ** 2)  # sum over the 3 x 3 points of the product
    assert mass_near_points(model, 3, delta, m=16) == pytest.approx(expected, rel=1e-3)


def test_without_dequantization_the_likelihood_passes_zero_and_with_it_stays_below():
    """Integer data on a few points: the continuous flow squeezes its density onto them and its
    log-likelihood goes above 0 nats/dim; the dequantized bound cannot exceed log P(x) <= 0."""
    x = torch.tensor([[0, 0], [2, 1], [1, 3]]).repeat(100, 1)
    options = {"n_transforms": 2, "hidden_sizes": [16], "alpha": 0.0}
    with threads(1):
        raw = build_model("maf", (2,), 0, options)
        curve = train_log_likelihood(raw, x, steps=300, seed=0, lr=1e-2, batch_size=64, every=50)
        deq = build_model("maf", (2,), 4, options)
        bound = train_log_likelihood(deq, x, steps=300, seed=0, lr=1e-2, batch_size=64, every=50)
    assert [p[0] for p in curve] == [50, 100, 150, 200, 250, 300]
    assert curve[-1][1] > 0.0 and curve[-1][1] > curve[0][1]
    assert max(p[1] for p in bound) < -math.log(3) / 2 + 0.05  # best proper model: uniform on 3
