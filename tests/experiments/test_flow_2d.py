import math

import torch

from densitylab import build_model
from densitylab.data import load_dataset
from densitylab.experiments.flow_2d import (
    CLOSE,
    MODELS,
    chi2_radius_cdf,
    gaussianity,
    grid_points,
    inspect_flow,
    ks_distance,
    radius_ks,
    sliced_ks,
)
from densitylab.models.registry import data_kind_problem


def test_ks_distance_of_a_small_sample_by_hand():
    uniform = lambda x: x.clamp(0, 1)  # noqa: E731
    # empirical CDF of {0.1, 0.2, 0.9}: steps 1/3, 2/3, 1; largest gap to x: at 0.2 (2/3 - 0.2)
    assert math.isclose(ks_distance(torch.tensor([0.9, 0.1, 0.2], dtype=torch.double), uniform), 2 / 3 - 0.2)
    # just below a point the empirical CDF is the step before: 0.5 - 0 at the single point 0.5
    assert math.isclose(ks_distance(torch.tensor([0.5]), uniform), 0.5)


def test_true_gaussian_draws_are_close_and_distorted_ones_are_not():
    z = torch.randn(20000, 2, generator=torch.Generator().manual_seed(1))
    stats = gaussianity(z)
    assert stats["gap"] < 0.02 and stats["mean_norm"] < 0.03 and stats["cov_distance"] < 0.05
    assert gaussianity(1.5 * z)["radius_ks"] > 0.2  # too wide: the radius is off
    assert gaussianity(z + torch.tensor([0.3, 0.0]))["sliced_ks"] > 0.1  # shifted along x
    squashed = z * torch.tensor([1.4, 1 / 1.4])  # projections show it more than the radius
    assert radius_ks(squashed) < sliced_ks(squashed) and sliced_ks(squashed) > CLOSE
    # a ring of radius 1.2: every projection has variance 0.72 and the radius is a point mass
    angle = torch.rand(20000, generator=torch.Generator().manual_seed(2)) * 2 * math.pi
    ring = 1.2 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    assert radius_ks(ring) > 0.3 and gaussianity(ring)["gap"] > CLOSE


def test_gaussianity_counts_non_finite_latents_as_far():
    z = torch.randn(1000, 2, generator=torch.Generator().manual_seed(3))
    z[:200] = float("nan")
    assert gaussianity(z)["gap"] >= 0.2 - 1e-9


def test_chi2_radius_cdf_matches_a_monte_carlo_estimate():
    r = torch.randn(200000, 2, generator=torch.Generator().manual_seed(4)).norm(dim=1)
    for q in (0.5, 1.0, 2.0):
        assert abs(float((r <= q).double().mean() - chi2_radius_cdf(torch.tensor(q)))) < 0.005


def test_grid_points_cover_the_square_with_cell_centres():
    points, area = grid_points(4, extent=2.0)
    assert points.shape == (16, 2) and area == 1.0
    assert points[0].tolist() == [-1.5, -1.5] and points[1].tolist() == [-0.5, -1.5]
    assert points[-1].tolist() == [1.5, 1.5]


def test_every_flow_of_the_experiment_takes_continuous_2d_vectors():
    for name, spec in MODELS.items():
        assert data_kind_problem(spec.registry_name(name), (2,), 0) is None
        build_model(spec.registry_name(name), (2,), 0, spec.options)
        for toy in ("moons", "rings"):
            build_model(spec.registry_name(name), (2,), 0, spec.for_toy(toy, "small")[0])
    # the kinds of flow of the claim: RealNVP, MAF (affine and spline), Glow-style and FFJORD
    assert set(MODELS) == {"realnvp_vector", "maf", "maf_spline", "glow_vector", "ffjord"}
    assert MODELS["maf_spline"].registry_name("maf_spline") == "maf"


def test_an_identity_flow_gives_the_gaussian_density_and_the_data_as_latent():
    model = build_model("nice", (2,), 0, {"prior": "gaussian"})  # starts as the identity
    test = load_dataset("moons").test[:500]
    view = inspect_flow(model, test, grid=60, n_samples=300, seed=0)
    assert torch.allclose(view["latent"], test, atol=1e-5)
    assert abs(view["mass"] - 1) < 0.01  # N(0, I) has ~all its mass inside [-4.5, 4.5]^2
    centre = view["density"][29:31, 29:31]
    assert torch.allclose(centre, torch.full_like(centre, 1 / (2 * math.pi)), rtol=0.01)
    assert view["samples"].shape == (300, 2)
