"""One parametrized check of every flow transform: shapes, gradients, invertibility, Jacobian."""

import pytest
import torch

from densitylab.models.flows.coupling import AffineCoupling
from densitylab.models.flows.transforms import ActNorm, CompositeTransform, LogitTransform, Squeeze


def _randomize(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return module


TRANSFORMS = {
    "logit": lambda: LogitTransform(0.05),
    "logit-small-alpha": lambda: LogitTransform(1e-6),
    "squeeze": lambda: Squeeze(),
    "actnorm": lambda: _randomize(ActNorm(2)),
    "coupling-checkerboard-0": lambda: _randomize(AffineCoupling(2, "checkerboard", 0, 8)),
    "coupling-checkerboard-1": lambda: _randomize(AffineCoupling(2, "checkerboard", 1, 8)),
    "coupling-channel-0": lambda: _randomize(AffineCoupling(2, "channel", 0, 8)),
    "coupling-channel-1": lambda: _randomize(AffineCoupling(2, "channel", 1, 8, 2)),
    "composite": lambda: CompositeTransform(
        [_randomize(AffineCoupling(2, "checkerboard", 0, 8)), _randomize(ActNorm(2)), Squeeze(),
         _randomize(AffineCoupling(8, "channel", 1, 8))]
    ),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform(name):
    transform = TRANSFORMS[name]().double().eval()
    x = torch.rand(3, 2, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    z, logdet = transform(x)
    assert logdet.shape == (3,) and z.numel() == x.numel()
    x_back, logdet_inv = transform.inverse(z)
    assert torch.allclose(x_back, x, atol=1e-10)
    assert torch.allclose(logdet, -logdet_inv, atol=1e-10)

    jac = torch.autograd.functional.jacobian(
        lambda v: transform(v.view(1, 2, 4, 4))[0].reshape(-1), x[:1].reshape(-1)
    )
    assert logdet[0].item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-8)

    params = list(transform.parameters())
    if params:
        (z.sum() + logdet.sum()).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_couplings_start_as_identity():
    coupling = AffineCoupling(2, "checkerboard", 0, 8)
    x = torch.randn(2, 2, 4, 4)
    z, logdet = coupling(x)
    assert torch.equal(z, x) and torch.equal(logdet, torch.zeros(2))


def test_logit_with_a_small_alpha_keeps_float32_precision_near_one():
    """With alpha = 1e-6, s = alpha + (1 - 2 alpha) y rounds near 1 in float32; the logit and its
    log-determinant are computed from 1 - y instead, and match float64 to float32 precision."""
    y = torch.tensor([[0.0, 1e-9, 0.5, 1 - 2**-20, 1 - 2**-24]])
    z32, logdet32 = LogitTransform(1e-6)(y)
    z64, logdet64 = LogitTransform(1e-6)(y.double())
    torch.testing.assert_close(z32.double(), z64, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(logdet32.double(), logdet64, rtol=1e-6, atol=1e-4)
