import math

import pytest
import torch

from densitylab import build_model
from densitylab.evaluate import bits_per_dim
from densitylab.models.flows.flow import Flow
from densitylab.models.flows.transforms import CompositeTransform
from tests.conftest import all_images

TINY = {"n_scales": 2, "couplings_per_mask": 2, "final_couplings": 2, "hidden_channels": 8}


def _randomized(model, std=0.2):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


def _model(shape=(1, 4, 4), levels=4, **overrides):
    model = build_model("realnvp", shape, levels, TINY | overrides)
    return _randomized(model).double()


def test_inverse_of_forward_is_identity():
    model = _model((2, 8, 8))
    y = torch.rand(5, 2, 8, 8, dtype=torch.float64)
    z, logdet = model(y)
    y_back, logdet_inv = model.inverse(z)
    assert torch.allclose(y_back, y, atol=1e-9)
    assert torch.allclose(logdet, -logdet_inv, atol=1e-8)


def test_logdet_matches_autograd_jacobian():
    model = _model((1, 4, 4))
    y = torch.rand(1, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05

    def flat(v):
        return model(v.view(1, 1, 4, 4))[0].view(-1)

    jac = torch.autograd.functional.jacobian(flat, y.view(-1))
    _, expected = torch.linalg.slogdet(jac)
    _, logdet = model(y)
    assert logdet.item() == pytest.approx(expected.item(), abs=1e-8)


def test_dequantization_bound_sums_to_at_most_one():
    """Over all 1x2x2 images with K=4: sum exp(bound) <= 1, and the IW estimate approaches 1."""
    torch.manual_seed(0)
    model = _model((1, 2, 2), levels=4, n_scales=1, alpha=0.0)  # support exactly [0,1)^D
    images = all_images(1, 2, 2, 4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bound = torch.stack([model.log_prob(images, generator=gen) for _ in range(64)]).mean(0)
        iw = model.log_prob_iw(images, 256, generator=gen)
    bound_total = torch.logsumexp(bound, 0).exp().item()
    iw_total = torch.logsumexp(iw, 0).exp().item()
    assert bound_total <= 1.0
    assert bound_total < iw_total  # the importance-weighted estimate is tighter
    assert 0.9 < iw_total < 1.1  # and approaches the exact total mass, 1


def test_uniform_anchor_exact():
    """Identity couplings + logistic prior + alpha=0 is the uniform density on [0,1)^D."""
    for levels in (2, 256):
        model = build_model("realnvp", (1, 4, 4), levels, TINY | {"prior": "logistic",
                                                                 "alpha": 0.0})
        x = torch.randint(0, levels, (7, 1, 4, 4))
        assert bits_per_dim(model.double(), x) == pytest.approx(math.log2(levels), abs=1e-5)


def test_dequantized_flow_with_uniform_density_scores_log2_k():
    class Uniform(Flow):
        def log_density(self, y, cond=None):
            return torch.zeros(y.shape[0], dtype=torch.float64)

    model = Uniform((1, 3, 3), 16, CompositeTransform([]), prior="uniform")
    model.dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    x = torch.randint(0, 16, (4, 1, 3, 3))
    assert bits_per_dim(model, x) == pytest.approx(4.0, abs=1e-12)


def test_actnorm_data_dependent_init_and_gradients():
    model = build_model("realnvp", (1, 8, 8), 256, TINY)
    x = torch.randint(0, 256, (16, 1, 8, 8))
    model.train()
    first_actnorm = model.transform.stages[0].transforms[1]
    model.log_prob(x)
    assert not bool(first_actnorm.initialized)  # log_prob never initialises: initialize() does
    model.initialize(x)
    assert bool(first_actnorm.initialized)  # ActNorm after the first coupling, set from the data
    loss = -model.log_prob(x).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_samples_are_the_quantized_continuous_samples():
    model = _randomized(build_model("realnvp", (1, 8, 8), 16, TINY)).eval()
    x = model.sample(50, generator=torch.Generator().manual_seed(0), temperature=0.7)
    y = model.rsample(50, generator=torch.Generator().manual_seed(0), temperature=0.7)
    assert x.shape == (50, 1, 8, 8) and x.dtype == torch.long
    assert torch.equal(x, (y * 16).floor().clamp(0, 15).long())
    assert len(x.unique()) > 4
    # at initialisation (identity couplings) nearly all of the mass lies on [0, 1)
    fresh = build_model("realnvp", (1, 8, 8), 16, TINY).eval()
    y = fresh.rsample(200, generator=torch.Generator().manual_seed(0))
    assert ((y >= 0) & (y < 1)).float().mean() > 0.99


def test_too_many_scales_is_a_clear_error():
    from densitylab.errors import DensitylabError

    with pytest.raises(DensitylabError, match="n_scales"):
        build_model("realnvp", (1, 6, 6), 2, {"n_scales": 3})


def test_importance_weighted_estimate_is_at_least_the_mean_bound():
    """On the same dequantization draws, log mean exp >= mean log (Jensen), per image."""
    model = _model((1, 4, 4), levels=4)
    x = torch.randint(0, 4, (6, 1, 4, 4))
    with torch.no_grad():
        gen = torch.Generator().manual_seed(5)
        draws = torch.stack([model.log_prob(x, generator=gen) for _ in range(8)])
        iw = model.log_prob_iw(x, 8, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(iw, torch.logsumexp(draws, 0) - math.log(8), atol=1e-10)
    assert (iw >= draws.mean(0) - 1e-12).all()


# ----- spatial masks: checkerboard and the half-image masks ------------------------------------

def test_half_masks_split_top_bottom_and_left_right():
    from densitylab.models.flows.coupling import spatial_mask

    top = spatial_mask("top-bottom", 4, 5, 0)[0, 0]
    assert torch.equal(top, torch.tensor([[1.0] * 5] * 2 + [[0.0] * 5] * 2))
    assert torch.equal(spatial_mask("top-bottom", 4, 5, 1)[0, 0], 1 - top)
    left = spatial_mask("left-right", 3, 4, 0)[0, 0]
    assert torch.equal(left, torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 3))
    assert torch.equal(spatial_mask("left-right", 3, 4, 1)[0, 0], 1 - left)
    odd = spatial_mask("top-bottom", 5, 2, 0)[0, 0]  # odd height: the middle row goes to parity 0
    assert odd[:, 0].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    board = spatial_mask("checkerboard", 3, 3, 0)[0, 0]
    assert board.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]


@pytest.mark.parametrize("mask", ["checkerboard", "top-bottom", "left-right"])
@pytest.mark.parametrize("parity", [0, 1])
def test_spatial_mask_couplings(mask, parity):
    from densitylab.models.flows.coupling import AffineCoupling
    from tests.models.flow_checks import check_invertible, check_logdet, randomize_

    coupling = randomize_(AffineCoupling(2, mask, parity, 8), 0.3).double()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    check_invertible(coupling, x, atol=1e-10)
    check_logdet(coupling, x, atol=1e-8)
    keep = coupling.mask(x).bool().expand_as(x)
    z, _ = coupling(x)
    assert torch.equal(z[keep], x[keep]) and not torch.allclose(z[~keep], x[~keep])
    # the mask is built once per (H, W, device, dtype) and is not part of the state dict
    assert coupling.mask(x) is coupling.mask(x)
    assert not any("mask" in key for key in coupling.state_dict())


@pytest.mark.parametrize("mask", ["top-bottom", "left-right"])
def test_realnvp_with_half_masks(mask):
    model = _model((1, 4, 4), mask=mask)
    y = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    z, logdet = model(y)
    assert torch.allclose(model.inverse(z)[0], y, atol=1e-9)

    def flat(v):
        return model(v.view(1, 1, 4, 4))[0].view(-1)

    jac = torch.autograd.functional.jacobian(flat, y[:1].reshape(-1))
    assert logdet[0].item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-8)
    couplings = [m for m in model.modules() if hasattr(m, "mask_kind")]
    assert {c.mask_kind for c in couplings} == {mask, "channel"}


def test_unknown_mask_is_a_clear_error():
    from densitylab.errors import DensitylabError

    with pytest.raises(DensitylabError, match="mask"):
        build_model("realnvp", (1, 4, 4), 2, TINY | {"mask": "diagonal"})


def test_initialize_from_data_initialises_every_actnorm_and_survives_a_reload():
    from densitylab.models.flows.transforms import ActNorm

    model = build_model("realnvp", (1, 8, 8), 16, TINY)
    model.initialize_from_data(torch.randint(0, 16, (32, 1, 8, 8)))
    actnorms = [m for m in model.modules() if isinstance(m, ActNorm)]
    assert actnorms and all(a.is_initialized and bool(a.initialized) for a in actnorms)
    other = build_model("realnvp", (1, 8, 8), 16, TINY)
    other.load_state_dict(model.state_dict())  # the same keys as before the mask cache
    assert all(a.is_initialized for a in other.modules() if isinstance(a, ActNorm))
