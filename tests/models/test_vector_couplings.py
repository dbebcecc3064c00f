"""RealNVP and Glow on vectors (``realnvp_vector.py``, ``glow_vector.py``) and their parts: the
affine even/odd coupling, Glow's coupling with an MLP, per-coordinate ActNorm and the invertible
linear map (float64).

Tolerances: inverse(forward(x)) within 1e-10, log-dets within 1e-9 of slogdet of the autograd
Jacobian; the 2D density sums to 1 within 1e-2 on a 400x400 grid of [-7, 7]^2.
"""

import math

import pytest
import torch

from densitylab import build_model
from densitylab.errors import DensitylabError
from densitylab.models.flows.coupling import AffineVectorCoupling, GlowCoupling
from densitylab.models.flows.invconv import InvConv1x1
from densitylab.models.flows.transforms import ActNorm, AsChannels
from tests.models.flow_checks import check_invertible, check_logdet, check_shapes, randomize_

TINY = {
    "realnvp_vector": {"couplings": 4, "hidden_features": 16, "hidden_layers": 1},
    "glow_vector": {"steps": 3, "hidden_features": 16},
}


@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("parity", [0, 1])
def test_affine_vector_coupling(dim, parity):
    coupling = randomize_(AffineVectorCoupling(dim, parity, 8, 2), 0.3).double()
    x = torch.randn(4, dim, dtype=torch.float64)
    check_shapes(coupling, x)
    check_invertible(coupling, x, atol=1e-10)
    check_logdet(coupling, x, atol=1e-9)
    z, logdet = coupling(x)
    kept = torch.arange(dim) % 2 == parity  # the conditioning coordinates pass unchanged
    assert torch.equal(z[:, kept], x[:, kept])
    assert not torch.allclose(z[:, ~kept], x[:, ~kept])
    assert not torch.allclose(logdet, torch.zeros_like(logdet))  # not volume preserving


def test_affine_vector_coupling_scale_is_bounded():
    coupling = AffineVectorCoupling(2, 0, 8, 1).double()
    with torch.no_grad():
        coupling.net.net[-1].bias.fill_(1e3)  # a huge raw scale
    _, logdet = coupling(torch.randn(3, 2, dtype=torch.float64))
    assert torch.allclose(logdet, torch.ones(3, dtype=torch.float64))  # scale * tanh <= 1


def test_glow_coupling_on_vectors():
    coupling = randomize_(GlowCoupling(5, 8, 1, vectors=True), 0.3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    check_shapes(coupling, x)
    check_invertible(coupling, x, atol=1e-10)
    check_logdet(coupling, x, atol=1e-9)
    assert torch.equal(coupling(x)[0][:, :2], x[:, :2])  # the first D // 2 coordinates condition


@pytest.mark.parametrize("inner", [ActNorm, InvConv1x1])
def test_per_channel_transforms_on_vectors(inner):
    torch.manual_seed(0)
    transform = randomize_(AsChannels(inner(3)), 0.3).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    check_shapes(transform, x)
    check_invertible(transform, x, atol=1e-10)
    check_logdet(transform, x, atol=1e-9)


def test_actnorm_on_vectors_initialises_to_zero_mean_unit_variance():
    model = build_model("realnvp_vector", (2,), 0, TINY["realnvp_vector"]).double()
    x = torch.randn(512, 2, dtype=torch.float64) * torch.tensor([3.0, 0.5]) + 4
    model.initialize_from_data(x)
    first_actnorm = model.transform.transforms[1].inner
    assert first_actnorm.is_initialized
    h, _ = model.transform.transforms[0](x)
    z, _ = model.transform.transforms[1](h)
    assert torch.allclose(z.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(z.std(0, correction=0), torch.ones(2, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("name", sorted(TINY))
def test_2d_density_integrates_to_one(name):
    torch.manual_seed(0)
    model = randomize_(build_model(name, (2,), 0, TINY[name]).double(), 0.1).eval()
    side = torch.linspace(-7, 7, 400, dtype=torch.float64)
    grid = torch.cartesian_prod(side, side)
    with torch.no_grad():
        density = model.log_prob(grid).exp()
    assert float(density.sum() * (side[1] - side[0]) ** 2) == pytest.approx(1.0, abs=1e-2)
    gaussian = torch.exp(-0.5 * grid.pow(2).sum(1)) / (2 * math.pi)
    assert float((density - gaussian).abs().max()) > 0.01  # the flow does something


@pytest.mark.parametrize("name", sorted(TINY))
def test_discrete_vectors_are_dequantized_and_sampled_in_range(name):
    torch.manual_seed(0)
    model = randomize_(build_model(name, (4,), 16, TINY[name]).double(), 0.1).eval()
    x = torch.randint(0, 16, (8, 4))
    bpd = model.bits_per_dim(x, generator=torch.Generator().manual_seed(0))
    assert bpd.shape == (8,) and torch.isfinite(bpd).all()
    samples = model.sample(6, generator=torch.Generator().manual_seed(1))
    assert samples.dtype == torch.long and samples.min() >= 0 and samples.max() < 16


@pytest.mark.parametrize("name", sorted(TINY))
def test_one_dimensional_data_is_refused(name):
    with pytest.raises(DensitylabError, match="1D data"):
        build_model(name, (1,), 0, TINY[name])


def test_learns_a_2d_toy_quickly():
    """A few hundred steps on two moons take the flow far from its start (a smoke check of the
    training signal; the flow-2d experiment measures how Gaussian the latents become)."""
    from densitylab.data import load_dataset

    torch.manual_seed(0)
    data = load_dataset("moons").train[:2048]
    for name in sorted(TINY):
        model = build_model(name, (2,), 0, TINY[name])
        model.initialize_from_data(data)
        opt = torch.optim.Adam(model.parameters(), 5e-3)
        with torch.no_grad():
            start = float(-model.log_prob(data).mean())
        for _ in range(150):
            batch = data[torch.randint(0, len(data), (256,))]
            loss = -model.log_prob(batch).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            end = float(-model.log_prob(data).mean())
        assert end < start - 0.3, (name, start, end)
