"""MAF and IAF: the masked autoregressive transform (affine and spline), its inverse, and the models.

Tolerances (float64): ``inverse(forward(x))`` within 1e-9, log-dets within 1e-8 of ``slogdet`` of
the autograd Jacobian, the MAF/IAF change-of-variables identity within 1e-8.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from densitylab import build_model
from densitylab.config import RunConfig
from densitylab.errors import DensitylabError
from densitylab.evaluate import bits_per_dim
from densitylab.models.flows.autoregressive import InverseTransform, MaskedAutoregressiveTransform
from densitylab.models.flows.priors import GaussianPrior
from densitylab.models.flows.splines import rational_quadratic_spline
from densitylab.nn.made import hidden_degrees, made_masks
from densitylab.nn.staircase import StaircaseLinear, staircase_layout
from densitylab.train.trainer import Trainer
from tests.models.flow_checks import (
    check_gradients,
    check_invertible,
    check_logdet,
    check_save_load,
    check_shapes,
    jacobian_logdet,
    randomize_,
)

ORDER = [2, 0, 4, 1, 3]
KINDS = {"affine": {}, "spline": {"bins": 4, "tail_bound": 2.0}}
TINY = {"n_transforms": 3, "hidden_sizes": [16, 16]}


def _transform(kind, seed=0, dim=5, std=0.3, degrees="sequential"):
    transform = MaskedAutoregressiveTransform(dim, [12, 12], ORDER[:dim] if dim == 5 else None,
                                              kind, seed=seed, degrees=degrees, **KINDS[kind])
    return randomize_(transform.double(), std=std, seed=seed)


def _points(n=4, dim=5, scale=1.5, seed=0):
    # some of them outside the spline's [-2, 2], on its linear tails
    return torch.randn(n, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * scale


# ----- the transform, both directions ---------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("direction", ["maf", "iaf"])
def test_transform_oracles(kind, direction):
    def make():
        inner = _transform(kind)
        return inner if direction == "maf" else InverseTransform(inner)

    transform, x = make(), _points()
    check_shapes(transform, x)
    check_invertible(transform, x, atol=1e-9)
    check_logdet(transform, x, atol=1e-8)
    z, logdet = transform(x)
    check_gradients(transform, z.pow(2).sum() + logdet.sum())
    check_save_load(transform, make, lambda m: m(x)[0])


@pytest.mark.parametrize("degrees", ["sequential", "random"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_autoregressive_property_in_the_permuted_order(kind, degrees):
    transform, x = _transform(kind, degrees=degrees), _points(1)
    jac = torch.autograd.functional.jacobian(lambda v: transform(v[None])[0][0], x[0])
    order = torch.tensor(ORDER)
    in_order = jac[order][:, order]  # row k: output order[k], column j: input order[j]
    assert torch.equal(in_order.triu(1), torch.zeros_like(in_order))
    assert (in_order.diagonal().abs() > 0).all()
    assert (in_order.tril(-1).abs() > 1e-6).sum() >= 6  # earlier dimensions really are used


def test_actnorm_between_transforms_is_initialised_on_the_data_and_invertible():
    model = build_model("maf", (5,), 0, TINY | {"actnorm": True}).double()
    x = _points(64) * 3 + 2
    model.initialize_from_data(x)
    actnorms = [t.inner for t in model.transform.transforms
                if not isinstance(t, MaskedAutoregressiveTransform)]
    assert len(actnorms) == TINY["n_transforms"] and all(a.is_initialized for a in actnorms)
    z, _ = model.transform.transforms[1](model.transform.transforms[0](x)[0])
    assert torch.allclose(z.mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-9)
    randomize_(model, 0.05).eval()
    check_invertible(model.transform, x[:4], atol=1e-9)
    check_logdet(model.transform, x[:4], atol=1e-8)


def test_sequential_degrees_cycle_through_every_degree():
    from densitylab.nn.made import sequential_degrees

    first, second = sequential_degrees([10, 3], 5)
    assert first.tolist() == [1, 2, 3, 4, 1, 2, 3, 4, 1, 2] and second.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="degrees must be one of"):
        MaskedAutoregressiveTransform(3, [8], degrees="even")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_forward_is_one_pass_inverse_is_d_passes(kind):
    transform = _transform(kind)
    transform.method = "naive"  # the cached method makes no full pass in the sequential direction
    calls = []
    transform.net.register_forward_hook(lambda *args: calls.append(1))
    x = _points()
    with torch.no_grad():
        z, _ = transform(x)
        assert len(calls) == 1
        transform.inverse(z)
        assert len(calls) == 1 + 5
        iaf = InverseTransform(transform)
        iaf.inverse(z)  # IAF sampling: one pass
        assert len(calls) == 1 + 5 + 1
        iaf(x)  # IAF density: D passes
    assert len(calls) == 1 + 5 + 1 + 5


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_implicit_gradient_of_the_inverse_equals_backprop_through_the_passes(kind):
    transform = _transform(kind, seed=3)
    z = _points(3, seed=1).requires_grad_()
    x, logdet = transform.inverse(z)
    loss = x.sin().sum() + logdet.sum()
    params = list(transform.parameters())
    implicit = torch.autograd.grad(loss, [z, *params])

    ordered = transform._ordered(z)
    tensors, value = transform.net.tensors(), ordered
    for _ in range(transform.dim):  # the D passes, all recorded by autograd
        value, logdet = transform.inverse_step(ordered, transform.net(value, tensors))
    reference = torch.autograd.grad(transform._unordered(value).sin().sum() + logdet.sum(), [z, *params])
    for a, b in zip(implicit, reference, strict=True):
        assert torch.allclose(a, b, atol=1e-10)
    assert torch.autograd.gradcheck(lambda v: transform.inverse(v), (z.detach().requires_grad_(),))


def test_transform_starts_as_the_identity():
    for kind in KINDS:
        transform = MaskedAutoregressiveTransform(5, [8], ORDER, kind, **KINDS[kind]).double()
        x = _points()
        z, logdet = transform(x)
        assert torch.allclose(z, x, atol=1e-12)
        assert torch.allclose(logdet, torch.zeros(4, dtype=torch.float64), atol=1e-12)


def test_bad_transform_arguments_raise():
    with pytest.raises(ValueError, match="permutation"):
        MaskedAutoregressiveTransform(3, [8], [0, 0, 1])
    with pytest.raises(ValueError, match="transform"):
        MaskedAutoregressiveTransform(3, [8], transform="cubic")


# ----- the staircase layers are MADE's masked layers --------------------------------------------
@pytest.mark.parametrize("blocks", [1, 3, 8])
def test_staircase_layers_equal_dense_masked_layers(blocks):
    dim, gen = 7, torch.Generator().manual_seed(0)
    hidden = [d.sort().values for d in hidden_degrees([10, 9], dim, gen)]
    masks = made_masks(torch.arange(1, dim + 1), hidden, 2)
    for mask in masks:
        layer = randomize_(StaircaseLinear(mask, blocks).double())
        dense = layer.dense_weight()
        assert torch.equal(dense != 0, mask)  # exactly MADE's connectivity, nothing stored above it
        x = torch.randn(3, mask.shape[1], dtype=torch.float64, requires_grad=True)
        out = layer(x)
        expected = F.linear(x, layer.dense_weight() * mask, layer.bias)
        assert torch.allclose(out, expected, atol=1e-12)
        g = torch.randn_like(out)
        grads = torch.autograd.grad(out, [x, layer.weight, layer.bias], g)
        reference = torch.autograd.grad(expected, [x, layer.weight, layer.bias], g)
        for a, b in zip(grads, reference, strict=True):
            assert torch.allclose(a, b, atol=1e-12)


def test_masked_weights_stay_zero_under_adam_and_are_cleaned_after_outside_writes():
    transform = _transform("affine")  # randomize_ wrote noise into the masked entries
    x = _points(16)
    optimizer = torch.optim.Adam(transform.parameters(), lr=1e-2)
    for _ in range(3):
        z, logdet = transform(x)  # cleans, then only live entries get a gradient
        optimizer.zero_grad()
        (z.pow(2).sum() - logdet.sum()).backward()
        optimizer.step()
    for layer in transform.net.layers:
        flat = layer.weight.detach().clone()
        layer.clean_()
        assert torch.equal(flat, layer.weight.detach())  # nothing to clean after Adam steps
        assert int((layer.dense_weight() != 0).sum()) == layer.connections


def test_cached_block_views_follow_dtype_changes_and_loaded_weights():
    x = _points()
    transform = randomize_(MaskedAutoregressiveTransform(5, [12], ORDER), std=0.3)
    transform(x.float())  # builds the cached views of the float32 weights
    transform.double()
    reference = MaskedAutoregressiveTransform(5, [12], ORDER).double()
    reference.load_state_dict(transform.state_dict())
    assert torch.equal(transform(x)[0], reference(x)[0])
    other = randomize_(MaskedAutoregressiveTransform(5, [12], ORDER), std=0.5, seed=7).double()
    transform.load_state_dict(other.state_dict())  # copied into the same storage
    assert torch.equal(transform(x)[0], other(x)[0])


def test_staircase_layout_covers_every_row_once_and_merges_equal_widths():
    lengths = [0, 0, 1, 1, 3, 3, 3, 5, 6, 6]
    layout, size = staircase_layout(lengths, 5)
    assert sum(rows for rows, _, _ in layout) == 10
    ends = torch.tensor([rows for rows, _, _ in layout]).cumsum(0) - 1
    assert [width for _, width, _ in layout] == [lengths[end] for end in ends]  # the longest prefix
    assert size == sum(rows * width for rows, width, _ in layout)
    starts = torch.tensor([0] + [rows for rows, _, _ in layout]).cumsum(0)[:-1]
    assert [full for _, _, full in layout] == [lengths[start] for start in starts]  # the shortest
    widths = [width for _, width, _ in layout]
    assert len(set(widths)) == len(widths)


@pytest.mark.parametrize("degrees", ["sequential", "random"])
def test_paper_sized_image_maf_stores_the_live_weights_and_about_half_the_dense_ones(degrees):
    model = build_model("maf", (1, 28, 28), 256, {"degrees": degrees})
    stored = sum(p.numel() for p in model.parameters())
    live = sum(layer.connections + layer.bias.numel()
               for t in model.transform.transforms for layer in t.net.layers)
    dense = 5 * (784 * 512 + 512 * 512 + 512 * 1568 + 512 + 512 + 1568)
    assert 7.2e6 < dense < 7.4e6
    assert live < stored < 0.65 * dense  # sequential: 4.43M stored, 4.03M live; random: 4.11M, 3.65M


# ----- splines ---------------------------------------------------------------------------------
def test_spline_identity_at_zero_inverse_and_derivative():
    gen = torch.Generator().manual_seed(0)
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    zeros = torch.zeros(101, 6, dtype=torch.float64)
    y, log_d = rational_quadratic_spline(x, zeros, zeros, zeros[:, :5], bound=3.0)
    assert torch.allclose(y, x, atol=1e-12) and torch.allclose(log_d, torch.zeros_like(x), atol=1e-12)

    w, h, d = (torch.randn(101, k, dtype=torch.float64, generator=gen) * 2 for k in (6, 6, 5))
    xr = x.clone().requires_grad_()
    y, log_d = rational_quadratic_spline(xr, w, h, d, bound=3.0)
    (dy,) = torch.autograd.grad(y.sum(), xr)
    assert torch.allclose(log_d, dy.log(), atol=1e-10)
    assert (dy > 0).all()  # monotone
    outside = x.abs() > 3
    assert torch.equal(y[outside], x[outside]) and (log_d[outside] == 0).all()
    back, log_inv = rational_quadratic_spline(y.detach(), w, h, d, inverse=True, bound=3.0)
    assert torch.allclose(back, x, atol=1e-10) and torch.allclose(log_inv, -log_d, atol=1e-10)


# ----- MAF and IAF share one transform ---------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_maf_and_iaf_with_the_same_transform_satisfy_change_of_variables(kind):
    """An IAF whose inner stack holds the MAF's state dict samples by the map ``T`` the MAF scores
    with. For points ``u`` and ``x = T(u)``: the MAF gives ``log p_M(u) = log p0(x) + L(u)`` in one
    pass per transform and the IAF ``log p_I(x) = log p0(u) - L(u)`` in D passes, with
    ``L = log|det dT/du|``; so ``log p_I(x) + log p_M(u) = log p0(u) + log p0(x)``."""
    config = TINY | KINDS[kind] | {"transform": kind, "permutation": "random"}
    maf = randomize_(build_model("maf", (4,), 0, config).double(), std=0.2)
    iaf = build_model("iaf", (4,), 0, config).double()
    iaf.transform.inner.load_state_dict(maf.transform.state_dict())
    u = _points(6, dim=4, scale=1.0)
    with torch.no_grad():
        x, logdet = maf.transform(u)
        x_iaf, _ = iaf.transform.inverse(u)  # the IAF's sampling map is the MAF's T
        u_back, logdet_iaf = iaf.transform(x)
        log_maf, log_iaf = maf.log_prob(u), iaf.log_prob(x)
    assert torch.allclose(x_iaf, x, atol=1e-12)
    assert torch.allclose(u_back, u, atol=1e-9)
    assert torch.allclose(logdet_iaf, -logdet, atol=1e-8)
    p0_u, p0_x = GaussianPrior().log_prob(u), GaussianPrior().log_prob(x)
    assert torch.allclose(log_iaf + log_maf, p0_u + p0_x, atol=1e-8)
    assert torch.allclose(log_maf, p0_x + logdet, atol=1e-12)


# ----- densities, anchors, sampling ------------------------------------------------------------
# (randomisation, grid half-width, points per side): affine maps spread mass far out, splines
# make sharp peaks; both Riemann sums are within 1e-2 of 1 for every seed tried (0-4)
GRIDS = {"affine": (0.3, 25, 1001), "spline": (0.15, 8, 801)}


@pytest.mark.parametrize("name", ["maf", "iaf"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_2d_density_integrates_to_one(name, kind):
    std, half_width, points = GRIDS[kind]
    config = TINY | KINDS[kind] | {"transform": kind, "scale_bound": 1.0}
    model = randomize_(build_model(name, (2,), 0, config).double(), std=std).eval()
    side = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    grid = torch.cartesian_prod(side, side)
    with torch.no_grad():
        density = torch.cat([model.log_prob(chunk) for chunk in grid.split(1 << 15)]).exp()
    cell = (side[1] - side[0]) ** 2
    assert float(density.sum() * cell) == pytest.approx(1.0, abs=1e-2)
    gaussian = GaussianPrior().log_prob(grid).exp()
    assert float((density - gaussian).abs().max()) > 0.1  # the transforms do something


@pytest.mark.parametrize("name", ["maf", "iaf"])
@pytest.mark.parametrize("levels", [2, 256])
def test_uniform_anchor_is_exactly_log2_k(name, levels):
    """Identity transforms (at initialisation) + logit with alpha=0 + logistic prior = uniform."""
    model = build_model(name, (1, 4, 4), levels, TINY | {"prior": "logistic", "alpha": 0.0})
    x = torch.randint(0, levels, (7, 1, 4, 4))
    assert bits_per_dim(model.double(), x) == pytest.approx(math.log2(levels), abs=1e-5)


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_sampling_returns_data_of_the_training_kind(name):
    model = randomize_(build_model(name, (1, 4, 4), 16, TINY), std=0.05).eval()
    images = model.sample(20, generator=torch.Generator().manual_seed(0))
    y = model.rsample(20, generator=torch.Generator().manual_seed(0))
    assert images.shape == (20, 1, 4, 4) and images.dtype == torch.long
    assert 0 <= int(images.min()) and int(images.max()) <= 15 and len(images.unique()) > 3
    assert torch.equal(images, (y * 16).floor().clamp(0, 15).long())
    toy = randomize_(build_model(name, (2,), 0, TINY), std=0.1).eval()
    points = toy.sample(50, generator=torch.Generator().manual_seed(0))
    assert points.shape == (50, 2) and points.dtype == torch.float32 and points.std() > 0.3


def test_maf_samples_invert_the_density_map():
    model = randomize_(build_model("maf", (3,), 0, TINY | {"permutation": "random"}).double(), std=0.2)
    with torch.no_grad():
        x = model.sample(8, generator=torch.Generator().manual_seed(1))
        z, _ = model.transform(x)
    noise = torch.randn(8, 3, generator=torch.Generator().manual_seed(1)).double()
    assert torch.allclose(z, noise, atol=1e-9)


def test_labels_are_refused():
    model = build_model("maf", (2,), 0, TINY)
    with pytest.raises(DensitylabError, match="unconditional"):
        model.log_prob(torch.randn(3, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(DensitylabError, match="unconditional"):
        model.sample(3, torch.zeros(3, dtype=torch.long))


def test_config_errors_are_one_line():
    with pytest.raises(DensitylabError, match="transform"):
        build_model("maf", (2,), 0, {"transform": "cubic"})
    with pytest.raises(DensitylabError, match="permutation"):
        build_model("iaf", (2,), 0, {"permutation": "sorted"})
    with pytest.raises(DensitylabError, match="prior"):
        build_model("maf", (2,), 0, {"prior": "uniform"})


# ----- training end to end ---------------------------------------------------------------------
def _train(tmp_path, model, data, model_config, steps, steps_per_epoch):
    config = RunConfig(model=model, model_config=model_config, data=data, epochs=steps / steps_per_epoch,
                       batch_size=64, threads=1, eval_every=1000, checkpoint_every=1000,
                       log_every=1, sample_count=4, warmup_steps=1)
    trainer = Trainer(config, tmp_path / model, progress=False)
    # every transform starts as the identity, so the untrained score does not depend on the init
    untrained = trainer.evaluate()
    trainer.fit()
    results = json.loads((tmp_path / model / "results.json").read_text())
    assert results["steps"] == steps and (tmp_path / model / "samples.png").is_file()
    return results, untrained


def test_training_on_moons(tmp_path):
    results, untrained = _train(tmp_path, "maf", "moons", TINY, 30, 20000 // 64)
    assert results["unit"] == "nats/dim"
    assert math.isfinite(results["test_nats_per_dim"]) and results["test_nats_per_dim"] < untrained - 0.05
    results, _ = _train(tmp_path, "iaf", "moons", TINY | {"transform": "spline"}, 5, 20000 // 64)
    assert math.isfinite(results["test_nats_per_dim"])


def test_training_on_digits(tmp_path):
    results, untrained = _train(tmp_path, "maf", "digits", {"n_transforms": 2, "hidden_sizes": [64]},
                                10, 1500 // 64)
    assert results["unit"] == "bits/dim"
    assert 0 < results["test_bits_per_dim"] < untrained - 0.1


def test_jacobian_logdet_of_whole_image_flow():
    """Logit preprocessing + 2 transforms on a 1x2x2 image: log-det of ``to_latent``."""
    model = randomize_(build_model("maf", (1, 2, 2), 4, TINY).double(), std=0.2)
    y = torch.rand(2, 1, 2, 2, dtype=torch.float64) * 0.9 + 0.05

    class Latent(torch.nn.Module):
        def forward(self, v, cond=None):
            return model(v)

    _, logdet = model(y)
    assert torch.allclose(logdet, jacobian_logdet(Latent(), y), atol=1e-8)
