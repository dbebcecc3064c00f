"""Exact oracles behind the newer experiments: the Hutchinson variance, channel permutations in
Glow, and the colour masks' dependencies."""

import torch

from densitylab import build_model
from densitylab.experiments.colour_masks import channel_dependencies, check, expected_dependencies
from densitylab.experiments.ffjord_trace import (
    estimator_stats,
    exact_jacobian,
    hutchinson_draws,
    theoretical_variance,
)
from densitylab.experiments.glow_permutation import ChannelPermutation, replace_invconvs


class Linear2D(torch.nn.Module):
    """``f(t, z) = z A^T``: the Jacobian is ``A`` everywhere."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = a

    def forward(self, t, z):
        return z @ self.a.T


def test_exact_jacobian_and_the_closed_form_variances_of_a_linear_field():
    a = torch.tensor([[1.0, 2.0], [-0.5, 3.0]], dtype=torch.double)
    net, z = Linear2D(a), torch.randn(5, 2, dtype=torch.double)
    jac = exact_jacobian(net, 0.0, z)
    assert torch.allclose(jac, a.expand(5, 2, 2))
    # A_s = [[1, 0.75], [0.75, 3]]: Gaussian 2 * (1 + 9 + 2 * 0.5625) = 22.25; Rademacher minus 2 * 10
    assert torch.allclose(theoretical_variance(jac, "gaussian"), torch.full((5,), 22.25, dtype=torch.double))
    assert torch.allclose(theoretical_variance(jac, "rademacher"), torch.full((5,), 2.25, dtype=torch.double))
    # Rademacher e in {-1, 1}^2: e^T A e = 4 + e1 e2 (2 - 0.5): exactly 5.5 or 2.5, mean 4 = tr A
    draws = hutchinson_draws(net, 0.0, z, "rademacher", 50, torch.Generator().manual_seed(0))
    assert set(draws.flatten().tolist()) <= {5.5, 2.5}
    stats = estimator_stats(net, z, 400, seed=0)
    assert abs(stats["rademacher"]["variance"] - 2.25) < 0.3
    assert abs(stats["gaussian"]["variance"] - 22.25) < 4.0
    assert stats["rademacher"]["theory"] == 2.25


def test_channel_permutation_is_invertible_with_zero_log_determinant():
    perm = ChannelPermutation(torch.tensor([2, 0, 3, 1]))
    x = torch.randn(3, 4, 2, 2)
    z, logdet = perm(x)
    assert torch.equal(z[:, 0], x[:, 2]) and torch.equal(logdet, torch.zeros(3))
    back, logdet_back = perm.inverse(z)
    assert torch.equal(back, x) and torch.equal(logdet_back, torch.zeros(3))


def test_a_glow_with_permutations_keeps_an_exact_inverse():
    model = build_model("glow", (1, 8, 8), 17, {"n_scales": 2, "steps_per_scale": 2,
                                                 "hidden_channels": 8})
    assert replace_invconvs(model, "reverse", seed=0) == 4
    assert not any(type(m).__name__ == "InvConv1x1" for m in model.modules())
    x = torch.randint(0, 17, (4, 1, 8, 8))
    log_p = model.log_prob(x, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(log_p).all()
    samples = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 8, 8) and int(samples.max()) < 17


def test_colour_masks_give_the_claimed_channel_order():
    model = build_model("pixelcnn", (3, 7, 7), 4, {"hidden_channels": 12, "output_hidden": 12,
                                                     "n_residual_blocks": 1, "first_kernel": 3})
    seen = channel_dependencies(model, size=7)
    found = check(seen)
    assert found["forbidden"] == 0 and found["centre_as_claimed"]
    assert found["matrix"].tolist() == [[False, False, False], [True, False, False], [True, True, False]]
    assert expected_dependencies(7)[2, 1, 3, 3] and not expected_dependencies(7)[1, 1, 3, 3]
