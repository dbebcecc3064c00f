"""The masked autoregressive transform's sequential direction computed by the cached (incremental)
masked MLP against the naive D full passes, and its optional continuous context.

Tolerances: in float64 the two methods agree within 1e-12 on the transform (the same products
summed in another order; most cases are bit-identical) and within 1e-10 on MAF samples, IAF
log-densities and their gradients through a few transforms; the context oracles use those of
``test_maf.py`` (inverse within 1e-9, log-dets within 1e-8 of ``slogdet``).
"""

import pytest
import torch

from densitylab import build_model
from densitylab.models.flows.autoregressive import (
    InverseTransform,
    MaskedAutoregressiveTransform,
    set_method,
)
from tests.models.flow_checks import check_invertible, check_logdet, randomize_

ORDER = [3, 0, 5, 1, 4, 2]
KINDS = {"affine": {}, "spline": {"bins": 4, "tail_bound": 2.0}}
TINY = {"n_transforms": 3, "hidden_sizes": [16, 16]}


def _transform(kind, context=0, degrees="random", seed=0):
    transform = MaskedAutoregressiveTransform(6, [14, 10], ORDER, kind, seed=seed, degrees=degrees,
                                              context_features=context, **KINDS[kind])
    return randomize_(transform.double(), std=0.3, seed=seed)


def _points(n=5, features=6, seed=0, scale=1.5):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, dtype=torch.float64, generator=generator) * scale


def _both(module, run):
    """``run()`` under the cached, then the naive method."""
    results = []
    for method in ("cached", "naive"):
        set_method(module, method)
        results.append(run())
    set_method(module, "cached")
    return results


# ----- cached against naive ----------------------------------------------------------------------
@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("degrees", ["sequential", "random"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_cached_inverse_equals_the_d_passes(kind, degrees, context):
    transform, z = _transform(kind, context, degrees), _points()
    cond = _points(5, context, seed=3) if context else None
    with torch.no_grad():
        (x_c, ld_c), (x_n, ld_n) = _both(transform, lambda: transform.inverse(z, cond))
    torch.testing.assert_close(x_c, x_n, rtol=0, atol=1e-12)
    torch.testing.assert_close(ld_c, ld_n, rtol=0, atol=1e-12)
    assert torch.allclose(transform(x_c, cond)[0], z, atol=1e-9)  # and it is the inverse


def test_the_cached_method_makes_no_full_pass():
    transform, z = _transform("affine"), _points()
    calls = []
    transform.net.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        transform.inverse(z)
    assert calls == []


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_maf_samples_are_the_naive_samples(kind):
    model = randomize_(build_model("maf", (6,), 0, TINY | {"transform": kind, **KINDS[kind]}).double(), 0.2)
    cached, naive = _both(model, lambda: model.sample(7, generator=torch.Generator().manual_seed(5)))
    torch.testing.assert_close(cached, naive, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_iaf_log_densities_are_the_naive_ones_on_images_and_vectors(kind):
    options = TINY | {"transform": kind, **KINDS[kind]}
    for shape, levels in [((6,), 0), ((1, 2, 3), 16)]:
        model = randomize_(build_model("iaf", shape, levels, options).double(), 0.2)
        x = _points(4) if levels == 0 else torch.randint(0, levels, (4, *shape))
        def log_prob(m=model, x=x):
            return m.log_prob(x, generator=torch.Generator().manual_seed(1))

        cached, naive = _both(model, log_prob)
        torch.testing.assert_close(cached, naive, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_iaf_training_gradients_are_the_naive_ones(kind):
    """Both methods find x* and hand it to the same implicit-function backward pass."""
    model = randomize_(build_model("iaf", (6,), 0, TINY | {"transform": kind, **KINDS[kind]}).double(), 0.2)
    x = _points(8)

    def gradients():
        model.zero_grad()
        (-model.log_prob(x).mean()).backward()
        return [p.grad.clone() for p in model.parameters()]

    cached, naive = _both(model, gradients)
    for a, b in zip(cached, naive, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert sum(float(g.abs().sum()) for g in cached) > 0


def test_set_method_reaches_every_transform_and_refuses_unknown_methods():
    model = build_model("maf", (4,), 0, TINY)
    assert set_method(model, "naive") == TINY["n_transforms"]
    assert all(t.method == "naive" for t in model.transform.transforms)
    with pytest.raises(ValueError, match="method must be one of"):
        set_method(model, "fast")
    with pytest.raises(ValueError, match="method must be one of"):
        MaskedAutoregressiveTransform(3, [8], method="fast")


# ----- context -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_with_context_the_jacobian_stays_triangular_in_the_order(kind):
    # inside the spline's [-2, 2] (outside it the map is the identity, whatever the context)
    transform, x, cond = _transform(kind, context=3), _points(1, scale=0.5), _points(1, 3, seed=2)
    jac = torch.autograd.functional.jacobian(lambda v: transform(v[None], cond)[0][0], x[0])
    order = torch.tensor(ORDER)
    in_order = jac[order][:, order]
    assert torch.equal(in_order.triu(1), torch.zeros_like(in_order))
    assert (in_order.diagonal().abs() > 0).all()
    jac_c = torch.autograd.functional.jacobian(lambda c: transform(x, c[None])[0][0], cond[0])
    assert (jac_c.abs().sum(1) > 0).all()  # every output moves with the context, the first one too


@pytest.mark.parametrize("method", ["cached", "naive"])
@pytest.mark.parametrize("direction", ["maf", "iaf"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_invertible_with_context(kind, direction, method):
    inner = _transform(kind, context=2)
    inner.method = method
    transform = inner if direction == "maf" else InverseTransform(inner)
    x, cond = _points(), _points(5, 2, seed=4)
    check_invertible(transform, x, cond, atol=1e-9)
    check_logdet(transform, x, cond, atol=1e-8)
    other = _points(5, 2, seed=5)
    assert not torch.allclose(transform(x, cond)[0], transform(x, other)[0])  # it is used


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_implicit_gradients_with_context_equal_backprop_through_the_passes(kind):
    transform = _transform(kind, context=2, seed=3)
    z, cond = _points(3, seed=1).requires_grad_(), _points(3, 2, seed=6).requires_grad_()
    x, logdet = transform.inverse(z, cond)
    params = list(transform.parameters())
    implicit = torch.autograd.grad(x.sin().sum() + logdet.sum(), [z, cond, *params])

    ordered, tensors = transform._ordered(z), transform.net.tensors()
    value = ordered
    for _ in range(transform.dim):  # the D passes, all recorded by autograd
        value, logdet = transform.inverse_step(ordered, transform.net(value, tensors, cond))
    reference = torch.autograd.grad(transform._unordered(value).sin().sum() + logdet.sum(),
                                    [z, cond, *params])
    for a, b in zip(implicit, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert implicit[1].abs().sum() > 0


def test_context_errors_are_clear():
    plain, conditional = _transform("affine"), _transform("affine", context=2)
    x = _points()
    with pytest.raises(ValueError, match="without context"):
        plain(x, _points(5, 2))
    with pytest.raises(ValueError, match="without context"):
        plain.inverse(x, _points(5, 2))
    with pytest.raises(ValueError, match="needs a context"):
        conditional(x)
    with pytest.raises(ValueError, match="needs a context"):
        InverseTransform(conditional)(x)
    with pytest.raises(ValueError, match=r"shape \(5, 2\)"):
        conditional(x, _points(4, 2))


def test_the_context_free_transform_keeps_its_parameters_and_degrees():
    """Existing checkpoints load: no context map unless asked for, same hidden degrees."""
    plain = MaskedAutoregressiveTransform(6, [14, 10], ORDER, degrees="random")
    assert not any("context" in name for name in plain.state_dict())
    assert "net.context.weight" in _transform("affine", context=2).state_dict()
