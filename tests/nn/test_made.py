"""The masked MLP of densitylab.nn.made: its autoregressive structure (with and without context) and
its incremental evaluation, which must give the full pass's outputs at every position (float64,
within 1e-12: the same products, summed in a different order)."""

import pytest
import torch

from densitylab.nn.made import MaskedMLP
from densitylab.nn.made_steps import MaskedMLPSteps
from tests.models.flow_checks import randomize_

DIM = 7


def _net(degrees="random", activation="relu", context=0, hidden=(12, 9), per_dim=3, seed=0):
    net = MaskedMLP(DIM, list(hidden), per_dim, degrees, seed=seed, activation=activation,
                    context_features=context)
    return randomize_(net.double(), std=0.5, seed=seed)


def _inputs(n=5, features=DIM, seed=0):
    return torch.randn(n, features, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("context", [0, 3])
@pytest.mark.parametrize("degrees", ["sequential", "random"])
def test_output_k_reads_only_inputs_before_k_and_all_of_the_context(degrees, context):
    net, x = _net(degrees, context=context), _inputs(1)
    c = _inputs(1, context, seed=1) if context else None
    jac = torch.autograd.functional.jacobian(lambda v: net(v[None], None, c)[0], x[0])  # (D, P, D)
    reads = jac.abs().sum(1) > 0  # reads[k, j]: an output of position k depends on input j
    assert not reads.triu().any()
    assert reads.tril(-1).sum() >= DIM  # earlier inputs really are used
    if context:
        jac_c = torch.autograd.functional.jacobian(lambda v: net(x, None, v[None])[0], c[0])
        assert (jac_c.abs().sum(1) > 0).all()  # every position sees c, the first one too


@pytest.mark.parametrize("hidden", [(12, 9), (20,), ()])
@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("activation", ["relu", "silu"])
@pytest.mark.parametrize("degrees", ["sequential", "random"])
def test_incremental_steps_equal_the_full_pass_at_every_position(degrees, activation, context, hidden):
    net, x = _net(degrees, activation, context, hidden), _inputs()
    c = _inputs(5, context, seed=2) if context else None
    full = net(x, None, c)  # (B, D, P)
    steps = net.steps(len(x), None, c)
    for t in range(DIM):
        if t:
            steps.inputs[t - 1] = x[:, t - 1]
        torch.testing.assert_close(steps.step(t), full[:, t].t(), rtol=0, atol=1e-12)


def test_each_unit_is_computed_once_and_only_from_inputs_already_given():
    net, x = _net(), _inputs()
    steps = net.steps(len(x))
    computed = [0] * len(steps.hidden)
    for t in range(DIM):
        steps.inputs[t:] = float("nan")  # inputs t.. are not known yet: reading them would show
        if t:
            steps.inputs[t - 1] = x[:, t - 1]
        for _, _, _, target in steps.plan[t]:  # target: the rows of a layer computed now
            storage = target.untyped_storage().data_ptr()
            layer = [h.untyped_storage().data_ptr() for h in steps.hidden].index(storage)
            computed[layer] += target.shape[0]
        assert torch.isfinite(steps.step(t)).all()
    widths = [layer.out_features for layer in net.layers[:-1]]
    assert all(c <= w for c, w in zip(computed, widths, strict=True))  # never twice
    assert sum(computed) > 0


def test_masks_that_are_not_staircases_are_refused():
    weight = torch.ones(2, 3)
    with pytest.raises(ValueError, match="staircase"):
        MaskedMLPSteps([weight, torch.ones(3, 2)], [torch.zeros(2), torch.zeros(3)],
                       [torch.tensor([2, 1]), torch.tensor([0, 1, 2])], 1, "relu", 4)
    with pytest.raises(ValueError, match="at or after its own position"):
        MaskedMLPSteps([torch.ones(3, 3)], [torch.zeros(3)], [torch.tensor([1, 2, 3])], 1, "relu", 4)


def test_context_is_checked():
    plain, with_context = _net(), _net(context=2)
    with pytest.raises(ValueError, match="without context"):
        plain.check_context(torch.zeros(4, 2), 4)
    with pytest.raises(ValueError, match="needs a context"):
        with_context.check_context(None, 4)
    with pytest.raises(ValueError, match=r"shape \(4, 2\)"):
        with_context.check_context(torch.zeros(4, 3), 4)
    assert with_context.check_context(torch.zeros(2), 4).shape == (4, 2)  # one context for all


def test_output_scale_zero_starts_every_output_at_zero_whatever_the_context():
    net = MaskedMLP(DIM, [8], 2, context_features=3).double()
    out = net(_inputs(), None, _inputs(5, 3))
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("context", [0, 2])
def test_reverse_solves_the_triangular_system_of_the_steps(context):
    """``v = b + v J`` with ``J = d y / d x`` for ``y_t = sum_p C_tp params_tp(x_<t)``, against the
    dense solve ``v = b (I - J)^{-1}`` of the autograd Jacobian, image by image."""
    net, x = _net(context=context), _inputs(3)
    c = _inputs(3, context, seed=2) if context else None
    generator = torch.Generator().manual_seed(1)
    weights = torch.randn(DIM, 3, 3, dtype=torch.float64, generator=generator)  # C: (D, P, B)
    seed = torch.randn(DIM, 3, dtype=torch.float64, generator=generator)  # b: (D, B)
    steps = net.steps(3, None, c)
    for t in range(DIM):
        if t:
            steps.inputs[t - 1] = x[:, t - 1]
        steps.step(t)
    steps.inputs[DIM - 1] = x[:, DIM - 1]
    v = steps.reverse(seed, weights)
    for b in range(3):
        cb = None if c is None else c[b : b + 1]
        jac = torch.autograd.functional.jacobian(lambda u, cb=cb: net(u[None], None, cb)[0], x[b])
        dense = torch.einsum("tp,tpk->tk", weights[:, :, b], jac)  # (D, D), strictly lower
        assert torch.equal(dense.triu(), torch.zeros_like(dense))
        expected = torch.linalg.solve((torch.eye(DIM, dtype=torch.float64) - dense).t(), seed[:, b])
        torch.testing.assert_close(v[:, b], expected, rtol=0, atol=1e-10)


def test_reverse_needs_relu():
    steps = _net(activation="silu").steps(2)
    with pytest.raises(ValueError, match="ReLU"):
        steps.reverse(torch.zeros(DIM, 2, dtype=torch.float64), torch.zeros(DIM, 3, 2, dtype=torch.float64))
