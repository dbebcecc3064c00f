"""Glow: LU 1x1 convolution, Glow coupling, learned split / top priors, the multi-scale model.

Float64, small shapes, randomized parameters. Tolerances: inverse(forward(x)) within 1e-9,
log-dets within 1e-8 of slogdet of the autograd Jacobian.
"""

import io

import pytest
import torch

from densitylab import build_model
from densitylab.errors import DensitylabError
from densitylab.models.flows.coupling import GlowCoupling
from densitylab.models.flows.glow import LearnedPrior, SplitPrior
from densitylab.models.flows.invconv import InvConv1x1
from densitylab.models.flows.transforms import ActNorm
from tests.models.flow_checks import (
    check_gradients,
    check_invertible,
    check_logdet,
    check_save_load,
    check_shapes,
    randomize_,
)

TINY = {"n_scales": 2, "steps_per_scale": 2, "hidden_channels": 8}


def _model(shape=(1, 4, 4), levels=4, seed=0, **overrides):
    torch.manual_seed(seed)
    return randomize_(build_model("glow", shape, levels, TINY | overrides), 0.2, seed).double()


def _x(channels=4, size=3, batch=3):
    return torch.randn(batch, channels, size, size, dtype=torch.float64)


TRANSFORMS = {
    "invconv": lambda: InvConv1x1(4),
    "glow-coupling": lambda: GlowCoupling(4, 8),
    "glow-coupling-odd": lambda: GlowCoupling(5, 8, 2),
    "split-prior": lambda: SplitPrior(4),
    "learned-prior": lambda: LearnedPrior(4),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform(name):
    transform = randomize_(TRANSFORMS[name](), 0.3).double()
    x = _x(channels=5 if name.endswith("odd") else 4)
    check_shapes(transform, x)
    check_invertible(transform, x, atol=1e-10)
    check_logdet(transform, x, atol=1e-8)
    z, logdet = transform(x)
    check_gradients(transform, z.pow(2).sum() + logdet.sum())


def test_invconv_is_plu_with_cheap_logdet():
    conv = randomize_(InvConv1x1(6), 0.3).double()
    w = conv.weight()
    lower, upper = conv.factors()
    assert torch.equal(torch.diagonal(lower), torch.ones(6, dtype=torch.float64))
    assert torch.equal(torch.tril(upper, -1), torch.zeros(6, 6, dtype=torch.float64))
    assert torch.allclose(w, conv.permutation @ lower @ upper)
    x = _x(channels=6, size=5)
    _, logdet = conv(x)
    assert torch.allclose(logdet, 25 * torch.linalg.slogdet(w)[1].expand(3), atol=1e-10)
    assert torch.allclose(conv.inverse_weight() @ w, torch.eye(6, dtype=torch.float64), atol=1e-12)
    fresh = InvConv1x1(6).double()  # starts as a rotation: |det W| = 1
    assert fresh.log_s.sum().abs() < 1e-6
    assert torch.allclose(fresh.weight() @ fresh.weight().T, torch.eye(6, dtype=torch.float64),
                          atol=1e-6)


def test_split_prior_bookkeeping():
    """log N(eps; 0, I) + logdet == log N(b; mu(a), sigma(a)) of the factored-out half ``b``."""
    split = randomize_(SplitPrior(4), 0.3).double()
    x = _x(channels=4, size=3)
    z, logdet = split(x)
    assert torch.equal(z[:, :2], x[:, :2])  # the kept half passes unchanged
    mu, log_sigma = split.net(x[:, :2]).chunk(2, 1)
    expected = torch.distributions.Normal(mu, log_sigma.exp()).log_prob(x[:, 2:]).flatten(1).sum(1)
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(z[:, 2:]).flatten(1).sum(1)
    assert torch.allclose(standard + logdet, expected, atol=1e-10)
    fresh = SplitPrior(4).double()  # zero-initialised: N(0, I)
    assert torch.equal(fresh(x)[0], x)


@pytest.mark.parametrize("overrides", [{}, {"preprocess": "center"}, {"learn_top": False},
                                       {"n_scales": 1}])
def test_whole_model_inverse_and_logdet(overrides):
    model = _model(**overrides)
    y = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    z, logdet = model(y)
    assert z.shape == (3, 16)
    y_back, logdet_inv = model.inverse(z)
    assert y_back.shape == y.shape
    assert torch.allclose(y_back, y, atol=1e-9)
    assert torch.allclose(logdet, -logdet_inv, atol=1e-9)
    check_logdet(model.transform, y, atol=1e-8)


def test_three_levels_on_8x8():
    model = _model((1, 8, 8), n_scales=3, steps_per_scale=1)
    assert model.transform.out_shapes == [(2, 4, 4), (4, 2, 2), (16, 1, 1)]
    y = torch.rand(2, 1, 8, 8, dtype=torch.float64) * 0.9 + 0.05
    z, _ = model(y)
    assert torch.allclose(model.inverse(z)[0], y, atol=1e-9)


def test_gradients_reach_every_parameter():
    model = _model((2, 4, 4))
    x = torch.randint(0, 4, (6, 2, 4, 4))
    check_gradients(model, -model.log_prob(x, generator=torch.Generator().manual_seed(0)).mean())


def test_save_load_round_trip():
    """The random permutation and signs of the 1x1 convs are saved with the weights."""
    model = _model(seed=1)
    x = torch.randint(0, 4, (4, 1, 4, 4))

    def run(m):
        return m.log_prob(x, generator=torch.Generator().manual_seed(3))

    def make():
        torch.manual_seed(99)  # different random 1x1 conv initialisations
        return build_model("glow", (1, 4, 4), 4, TINY).double()

    check_save_load(model.eval(), lambda: make().eval(), run)


def test_sampling_temperature():
    model = _model(levels=16).eval()
    cold = [model.sample(4, temperature=0.0, generator=torch.Generator().manual_seed(s))
            for s in (0, 1)]
    assert torch.equal(cold[0], cold[1]) and torch.equal(cold[0][0:1].expand(4, -1, -1, -1), cold[0])
    x = model.sample(50, temperature=0.7, generator=torch.Generator().manual_seed(0))
    assert x.shape == (50, 1, 4, 4) and x.dtype == torch.long
    assert x.min() >= 0 and x.max() <= 15 and len(x.unique()) > 4


def test_initialize_from_data_standardizes_actnorm_outputs():
    torch.manual_seed(0)
    model = build_model("glow", (1, 8, 8), 16, TINY).double()
    actnorms = [m for m in model.modules() if isinstance(m, ActNorm)]
    outputs = []
    handle = actnorms[0].register_forward_hook(lambda m, i, o: outputs.append(o[0]))
    model.initialize_from_data(torch.randint(0, 16, (64, 1, 8, 8)))
    handle.remove()
    assert all(a.is_initialized and bool(a.initialized) for a in actnorms)
    out = outputs[0]
    assert torch.allclose(out.mean((0, 2, 3)), torch.zeros(4, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(out.std((0, 2, 3), correction=0), torch.ones(4, dtype=torch.float64),
                          atol=1e-6)
    assert model.training  # the mode is restored


def test_actnorm_flag_follows_loaded_state():
    initialised = ActNorm(3)
    initialised.initialize(torch.randn(8, 3, 2, 2))
    buffer = io.BytesIO()
    torch.save(initialised.state_dict(), buffer)
    buffer.seek(0)
    other = ActNorm(3)
    assert not other.is_initialized
    other.load_state_dict(torch.load(buffer))
    assert other.is_initialized
    before = other.bias.clone()
    other.train()(torch.randn(8, 3, 2, 2) * 5 + 3)  # no second initialisation
    assert torch.equal(other.bias, before)
    fresh = ActNorm(3)
    fresh.load_state_dict(ActNorm(3).state_dict())  # an uninitialised state stays uninitialised
    assert not fresh.is_initialized


def test_too_many_levels_is_a_clear_error():
    with pytest.raises(DensitylabError, match="n_scales"):
        build_model("glow", (1, 28, 28), 256, {"n_scales": 3})
    with pytest.raises(DensitylabError, match="preprocess"):
        build_model("glow", (1, 8, 8), 256, {"preprocess": "zca"})
