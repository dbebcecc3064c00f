"""NICE: additive couplings, diagonal scaling, logistic prior (float64, small shapes).

Tolerances: inverse(forward(x)) within 1e-9, log-dets within 1e-8 of slogdet of the autograd
Jacobian, the uniform anchor within 1e-9 bits/dim.
"""

import math

import pytest
import torch

from densitylab import build_model
from densitylab.errors import DensitylabError
from densitylab.evaluate import bits_per_dim
from densitylab.models.flows.coupling import AdditiveCoupling
from densitylab.models.flows.nice import DiagonalScaling
from tests.models.flow_checks import (
    check_gradients,
    check_invertible,
    check_logdet,
    check_save_load,
    check_shapes,
    randomize_,
)

TINY = {"hidden_features": 8, "hidden_layers": 2}


def _model(shape=(1, 4, 4), levels=4, seed=0, **overrides):
    torch.manual_seed(seed)
    return randomize_(build_model("nice", shape, levels, TINY | overrides), 0.2, seed).double()


@pytest.mark.parametrize("dim", [5, 6])
@pytest.mark.parametrize("parity", [0, 1])
def test_additive_coupling(dim, parity):
    coupling = randomize_(AdditiveCoupling(dim, parity, 8, 2), 0.3).double()
    x = torch.randn(3, dim, dtype=torch.float64)
    check_shapes(coupling, x)
    check_invertible(coupling, x, atol=1e-10)
    check_logdet(coupling, x, atol=1e-10)
    z, logdet = coupling(x)
    assert torch.equal(logdet, torch.zeros(3, dtype=torch.float64))  # volume preserving
    kept = torch.arange(dim) % 2 == parity  # even (parity 0) or odd coordinates pass unchanged
    assert torch.equal(z[:, kept], x[:, kept])
    assert not torch.allclose(z[:, ~kept], x[:, ~kept])


def test_diagonal_scaling():
    scaling = randomize_(DiagonalScaling(4), 0.5).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    check_invertible(scaling, x, atol=1e-12)
    check_logdet(scaling, x, atol=1e-12)


@pytest.mark.parametrize("preprocess", ["logit", "none"])
def test_whole_model_inverse_and_logdet(preprocess):
    model = _model(preprocess=preprocess)
    y = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    z, logdet = model(y)
    assert z.shape == (3, 16)
    y_back, logdet_inv = model.inverse(z)
    assert torch.allclose(y_back, y, atol=1e-9)
    assert torch.allclose(logdet, -logdet_inv, atol=1e-9)
    check_logdet(model, y, atol=1e-8)  # the whole flow: includes the logit's log-determinant


def test_gradients_reach_every_parameter():
    model = _model()
    x = torch.randint(0, 4, (6, 1, 4, 4))
    check_gradients(model, -model.log_prob(x, generator=torch.Generator().manual_seed(0)).mean())


def test_save_load_round_trip():
    model = _model(seed=1)
    x = torch.randint(0, 4, (4, 1, 4, 4))

    def run(m):
        return m.log_prob(x, generator=torch.Generator().manual_seed(3))

    check_save_load(model, lambda: build_model("nice", (1, 4, 4), 4, TINY).double(), run)


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_uniform_anchor_exact(levels):
    """Identity couplings + logit with alpha=0 + logistic prior is uniform on [0,1)^D."""
    model = build_model("nice", (1, 4, 4), levels, TINY | {"alpha": 0.0, "prior": "logistic"})
    x = torch.randint(0, levels, (7, 1, 4, 4))
    assert bits_per_dim(model.double(), x) == pytest.approx(math.log2(levels), abs=1e-9)


def test_sampling_temperature():
    model = _model(levels=16).eval()
    cold = [model.sample(4, temperature=0.0, generator=torch.Generator().manual_seed(s))
            for s in (0, 1)]
    assert torch.equal(cold[0], cold[1]) and torch.equal(cold[0][0:1].expand(4, -1, -1, -1), cold[0])
    x = model.sample(50, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert x.shape == (50, 1, 4, 4) and x.dtype == torch.long
    assert x.min() >= 0 and x.max() <= 15 and len(x.unique()) > 4


def test_vectors_and_continuous_data():
    toy = _model(shape=(2,), levels=0)  # continuous 2D toy: a density in nats, no logit
    points = torch.randn(5, 2, dtype=torch.float64)
    assert torch.isfinite(toy.log_prob(points)).all()
    assert toy.sample(7, generator=torch.Generator().manual_seed(0)).dtype == torch.float64
    discrete = _model(shape=(6,), levels=8)
    x = discrete.sample(5, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 6) and torch.isfinite(discrete.log_prob(x)).all()
    with pytest.raises(DensitylabError, match="1-dimensional"):
        build_model("nice", (1,), 0)
